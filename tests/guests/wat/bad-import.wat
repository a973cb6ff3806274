;; A core module importing a function nobody grants: loading it must fail with the import named.
(module
  (import "evil" "launch_missiles" (func $launch))
  (memory (export "memory") 1)
  (func (export "_start")
    call $launch))
