;; A core module that is not a WASI command: it has no `_start` export, so the WAGI executor refuses it.
(module
  (memory (export "memory") 1)
  (func (export "other")))
