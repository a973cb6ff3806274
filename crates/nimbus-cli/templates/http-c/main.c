/* {{name}}: an HTTP function in C. A standard `wasi:http/incoming-handler` component importing
 * `wasi:keyvalue`, so any host that provides both runs it. `app.c`, `app.h` and
 * `app_component_type.o` are the bindings `wit-bindgen c` generates for the world `app` in wit/;
 * clang builds a WASI preview1 reactor module and `wasm-tools component new` adapts it into a
 * component.
 *
 * Each request adds 1 to the key `hits` in the KV bucket `default` (granted in nimbus.toml). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "app.h"

/* Adds 1 to `hits` in the bucket `default`. On failure, says why in `why`. */
static bool count_hit(uint64_t *hits, char *why, size_t why_len) {
    app_string_t name, key;
    app_string_set(&name, "default");
    app_string_set(&key, "hits");
    wasi_keyvalue_store_own_bucket_t bucket;
    wasi_keyvalue_store_error_t err;
    bool ok = wasi_keyvalue_store_open(&name, &bucket, &err);
    if (ok) {
        ok = wasi_keyvalue_atomics_increment(wasi_keyvalue_store_borrow_bucket(bucket), &key, 1, hits, &err);
        wasi_keyvalue_store_bucket_drop_own(bucket);
    }
    if (!ok) {
        switch (err.tag) {
        case WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE:
            snprintf(why, why_len, "no such bucket");
            break;
        case WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED:
            snprintf(why, why_len, "access denied: grant the bucket in nimbus.toml");
            break;
        default:
            snprintf(why, why_len, "%.*s", (int)err.val.other.len, (const char *)err.val.other.ptr);
        }
        wasi_keyvalue_store_error_free(&err);
    }
    return ok;
}

/* Answers `status` with `text` as a text/plain body. */
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status, const char *text) {
    wasi_http_types_tuple2_field_name_field_value_t header;
    app_string_set(&header.f0, "content-type");
    header.f1 = (wasi_http_types_field_value_t){(uint8_t *)"text/plain", strlen("text/plain")};
    wasi_http_types_list_tuple2_field_name_field_value_t list = {&header, 1};
    wasi_http_types_own_fields_t headers;
    wasi_http_types_header_error_t header_err;
    wasi_http_types_static_fields_from_list(&list, &headers, &header_err);

    wasi_http_types_own_outgoing_response_t response = wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_method_outgoing_response_set_status_code(wasi_http_types_borrow_outgoing_response(response), status);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_response_body(wasi_http_types_borrow_outgoing_response(response), &body);
    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false, .val.ok = response};
    wasi_http_types_static_response_outparam_set(out, &result);

    /* One blocking write takes up to 4096 bytes: enough for this answer. */
    wasi_http_types_own_output_stream_t stream;
    wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream);
    app_list_u8_t bytes = {(uint8_t *)text, strlen(text)};
    wasi_io_streams_stream_error_t stream_err;
    wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(stream), &bytes, &stream_err);
    wasi_io_streams_output_stream_drop_own(stream);
    wasi_http_types_error_code_t finish_err;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err);
}

void exports_wasi_http_incoming_handler_handle(exports_wasi_http_incoming_handler_own_incoming_request_t request,
                                               exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    app_string_t path = {0};
    wasi_http_types_method_incoming_request_path_with_query(wasi_http_types_borrow_incoming_request(request), &path);
    wasi_http_types_incoming_request_drop_own(request);

    char text[1024], why[256];
    uint64_t hits;
    if (count_hit(&hits, why, sizeof why)) {
        snprintf(text, sizeof text, "Hello from {{name}} (C)! path=%.*s hits=%" PRIu64 "\n", (int)path.len, (const char *)path.ptr, hits);
        respond(response_out, 200, text);
    } else {
        snprintf(text, sizeof text, "cannot count the hit in the KV bucket `default`: %s\n", why);
        respond(response_out, 500, text);
    }
    app_string_free(&path);
}
