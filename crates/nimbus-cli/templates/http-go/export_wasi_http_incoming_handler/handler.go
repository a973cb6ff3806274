// Package export_wasi_http_incoming_handler is {{name}}: an HTTP function in Go. A standard
// `wasi:http/incoming-handler` component importing `wasi:keyvalue`, so any host that provides
// both runs it. The other packages of this module are the bindings `wit-bindgen go` generates
// for the world `app` in wit/, and vendor/ holds the runtime they use
// (go.bytecodealliance.org/pkg v0.4.0, Apache-2.0, as shipped in the wit-bindgen-go 0.63.0
// crate). Go builds a GOOS=wasip1 reactor module and `wasm-tools component new` adapts it into a
// component.
//
// Each request adds 1 to the key `hits` in the KV bucket `default` (granted in nimbus.toml).
package export_wasi_http_incoming_handler

import (
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/wasi_http_types"
	"wit_component/wasi_keyvalue_atomics"
	"wit_component/wasi_keyvalue_store"
)

// Handle answers one request.
func Handle(request *wasi_http_types.IncomingRequest, responseOut *wasi_http_types.ResponseOutparam) {
	path := request.PathWithQuery().SomeOr("/")
	request.Drop()
	hits, err := countHit()
	if err != nil {
		respond(responseOut, 500, fmt.Sprintf("cannot count the hit in the KV bucket `default`: %v\n", err))
		return
	}
	respond(responseOut, 200, fmt.Sprintf("Hello from {{name}} (Go)! path=%s hits=%d\n", path, hits))
}

// countHit adds 1 to `hits` in the bucket `default` and returns the new count.
func countHit() (uint64, error) {
	opened := wasi_keyvalue_store.Open("default")
	if opened.IsErr() {
		return 0, kvError(opened.Err())
	}
	bucket := opened.Ok()
	defer bucket.Drop()
	hits := wasi_keyvalue_atomics.Increment(bucket, "hits", 1)
	if hits.IsErr() {
		return 0, kvError(hits.Err())
	}
	return hits.Ok(), nil
}

func kvError(e wasi_keyvalue_store.Error) error {
	switch e.Tag() {
	case wasi_keyvalue_store.Error_NoSuchStore:
		return fmt.Errorf("no such bucket")
	case wasi_keyvalue_store.Error_AccessDenied:
		return fmt.Errorf("access denied: grant the bucket in nimbus.toml")
	default:
		return fmt.Errorf("%s", e.Other())
	}
}

// respond answers `status` with `text` as a text/plain body.
func respond(out *wasi_http_types.ResponseOutparam, status uint16, text string) {
	headers := wasi_http_types.FieldsFromList([]witTypes.Tuple2[string, []uint8]{{F0: "content-type", F1: []uint8("text/plain")}}).Ok()
	response := wasi_http_types.MakeOutgoingResponse(headers)
	response.SetStatusCode(status)
	body := response.Body().Ok()
	wasi_http_types.ResponseOutparamSet(out, witTypes.Ok[*wasi_http_types.OutgoingResponse, wasi_http_types.ErrorCode](response))
	// One blocking write takes up to 4096 bytes: enough for this answer.
	stream := body.Write().Ok()
	stream.BlockingWriteAndFlush([]uint8(text))
	stream.Drop()
	wasi_http_types.OutgoingBodyFinish(body, witTypes.None[*wasi_http_types.Fields]())
}
