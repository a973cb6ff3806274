;; A WASI preview1 command module that never returns: the WAGI executor must stop it at its timeout.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever
      br $forever)))
