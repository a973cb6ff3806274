// {{name}}: an HTTP function in Go: a WASI preview1 command run by Nimbus as a CGI program (WAGI).
package main

import (
	"fmt"
	"os"
)

func main() {
	path := os.Getenv("PATH_INFO")
	if path == "" {
		path = "/"
	}
	query := os.Getenv("QUERY_STRING")
	if query != "" {
		query = "?" + query
	}
	fmt.Print("Content-Type: text/plain\n\n")
	fmt.Printf("Hello from {{name}} (Go)! path=%s%s\n", path, query)
}
