module example.com/service-go

go 1.21
