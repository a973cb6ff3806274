//! The gateway's own endpoints as OpenAPI paths: `/healthz`, the CloudEvents ingress, actor
//! calls and workflow runs. `nimbus-control` merges them into its document under the `gateway`
//! tag, so one file (`openapi/nimbus-v1.json`) describes every endpoint Nimbus serves; each path
//! item names the gateway's address as its server, since these are served where the apps are
//! (`nimbus up`'s `--listen`, a server's `--gateway-listen`), not on the control API.
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, PathItem, Paths, PathsBuilder, Ref, RefOr, Required, ResponseBuilder, Schema,
    Server, Type,
};

use crate::{ACTORS_PATH, EVENTS_PREFIX, HEALTH_PATH, IDEMPOTENCY_KEY_HEADER, WORKFLOWS_PATH};

/// The tag of the gateway's operations.
pub const TAG: &str = "gateway";
/// The name of [`error_schema`] among the document's schemas.
pub const ERROR_SCHEMA: &str = "GatewayError";

/// The JSON error the gateway answers with.
pub fn error_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .description(Some("An error the gateway answered itself"))
        .property("error", ObjectBuilder::new().schema_type(Type::String).description(Some("what went wrong")))
        .property("status", ObjectBuilder::new().schema_type(Type::Integer).description(Some("the HTTP status")))
        .property(
            "request_id",
            ObjectBuilder::new().schema_type(Type::String).description(Some("also in `x-request-id`")),
        )
        .required("error")
        .required("status")
        .required("request_id")
        .into()
}

/// The gateway's endpoints.
pub fn paths() -> Paths {
    let events = format!("{EVENTS_PREFIX}{{topic}}");
    let actors = format!("{ACTORS_PATH}{{type}}/{{key}}/{{method}}");
    let workflow = format!("{WORKFLOWS_PATH}{{name}}");
    let run = format!("{workflow}/{{run}}");
    PathsBuilder::new()
        .path(HEALTH_PATH, item(&[(HttpMethod::Get, health())]))
        .path(events, item(&[(HttpMethod::Post, publish())]))
        .path(actors, item(&[(HttpMethod::Post, call_actor())]))
        .path(&workflow, item(&[(HttpMethod::Post, start_run()), (HttpMethod::Get, list_runs())]))
        .path(&run, item(&[(HttpMethod::Get, show_run())]))
        .path(format!("{run}/signals/{{signal}}"), item(&[(HttpMethod::Post, signal_run())]))
        .path(format!("{run}/cancel"), item(&[(HttpMethod::Post, cancel_run())]))
        .build()
}

/// A path item served on the gateway.
fn item(operations: &[(HttpMethod, Operation)]) -> PathItem {
    let mut item = PathItem::default();
    for (method, op) in operations {
        item.merge_operations(PathItem::new(method.clone(), op.clone()));
    }
    let mut gateway = Server::new("/");
    gateway.description =
        Some("the gateway: where the apps are served (`nimbus up --listen`, `nimbus server --gateway-listen`)".into());
    item.servers = Some(vec![gateway]);
    item
}

fn operation(id: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(TAG)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .securities(Some(Vec::new()))
}

/// An operation on a topic, actor type or workflow: open to anyone when its trigger says
/// `public = true`, otherwise to a token that may write the app's data.
fn gated(id: &str, summary: &str, description: &str) -> OperationBuilder {
    let anyone_if_public = SecurityRequirement::default();
    operation(id, summary, description)
        .securities(Some([anyone_if_public, SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .response("401", error_response("not public (`public = true` on its trigger) and no token was sent"))
        .response("403", error_response("not public and the token may not write the app's data"))
}

/// A response with the gateway's JSON error.
fn error_response(description: &str) -> utoipa::openapi::Response {
    let error = Ref::from_schema_name(ERROR_SCHEMA);
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(error)).build())
        .build()
}

fn text_param(name: &str, within: ParameterIn, required: bool, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(within)
        .required(if required { Required::True } else { Required::False })
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn path_param(name: &str, description: &str) -> Parameter {
    text_param(name, ParameterIn::Path, true, description)
}

/// A body of bytes of `content_type`.
fn bytes_body(content_type: &str, description: &str) -> utoipa::openapi::request_body::RequestBody {
    let binary = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary)));
    RequestBodyBuilder::new()
        .description(Some(description))
        .content(content_type, ContentBuilder::new().schema(Some(binary)).build())
        .build()
}

/// Adds the responses: `(status, description)`; errors are the gateway's JSON error.
fn respond(mut op: OperationBuilder, responses: &[(u16, &str)]) -> Operation {
    for (status, description) in responses {
        let response = match status {
            400.. => error_response(description),
            _ => ResponseBuilder::new().description(*description).build(),
        };
        op = op.response(status.to_string(), response);
    }
    op.build()
}

fn health() -> Operation {
    respond(
        operation(
            "gateway_health",
            "Liveness",
            "Answers `{\"status\":\"ok\"}` while the node serves; never routed to an app.",
        ),
        &[(200, "the node serves")],
    )
}

fn publish() -> Operation {
    let op = gated(
        "gateway_publish_event",
        "Publish a CloudEvent",
        "Stores a CloudEvent on one of the app's topics (those its triggers consume or its components may \
         publish), in binary mode (`ce-*` headers, the body as data) or structured mode \
         (`application/cloudevents+json`). Answers once the event is durable.",
    )
    .parameter(path_param("topic", "the topic, e.g. `orders`"))
    .request_body(Some(bytes_body(
        "*/*",
        "the event's data (binary mode) or the whole event (structured mode), at most 1 MiB",
    )));
    respond(
        op,
        &[
            (202, "stored durably; it will be delivered"),
            (400, "not a valid CloudEvent: never stored, never retried"),
            (404, "the app has no such topic"),
            (405, "not POST"),
            (413, "over 1 MiB"),
            (503, "the event was not stored; retry"),
        ],
    )
}

fn call_actor() -> Operation {
    let op = gated(
        "gateway_call_actor",
        "Call an actor",
        "Runs METHOD on the activation of actor TYPE/KEY (one at a time per key) and answers once its \
         state changes are durable.",
    )
    .parameter(path_param("type", "the actor type (`[[trigger.actor]]`)"))
    .parameter(path_param("key", "the actor's key"))
    .parameter(path_param("method", "the method the handler receives"))
    .request_body(Some(bytes_body("*/*", "the input, at most 1 MiB")));
    respond(
        op,
        &[
            (200, "the handler's answer, its state committed"),
            (404, "no such actor type"),
            (405, "not POST"),
            (422, "the handler returned an error; its state is unchanged"),
            (429, "the app's budget reached its hard limit"),
            (500, "the instance trapped or could not start"),
            (503, "at capacity, or the state could not be read or committed; retry"),
            (504, "the call ran past the actor's time limit"),
        ],
    )
}

fn workflow_name() -> Parameter {
    path_param("name", "the workflow (`[[trigger.workflow]]`)")
}

fn run_id() -> Parameter {
    path_param("run", "the run's id")
}

fn start_run() -> Operation {
    let op = gated("gateway_start_run", "Start a workflow run", "Starts a run with the body as its input.")
        .parameter(workflow_name())
        .parameter(text_param(
            IDEMPOTENCY_KEY_HEADER,
            ParameterIn::Header,
            false,
            "a repeated start with the same key answers the run the first one started",
        ))
        .request_body(Some(bytes_body("*/*", "the run's input, at most 512 KiB")));
    respond(
        op,
        &[
            (202, "started: the run's id and status"),
            (200, "the run this idempotency key started before"),
            (400, "a bad idempotency key or input"),
            (404, "no such workflow"),
            (413, "over 512 KiB"),
            (429, "the app's budget reached its hard limit"),
            (503, "the journal could not be written; retry"),
        ],
    )
}

fn list_runs() -> Operation {
    let op = gated("gateway_list_runs", "List workflow runs", "The workflow's runs, newest first.")
        .parameter(workflow_name())
        .parameter(text_param("revision", ParameterIn::Query, false, "only runs pinned to this revision"))
        .parameter(text_param("status", ParameterIn::Query, false, "only runs in this status"));
    respond(op, &[(200, "the runs"), (404, "no such workflow")])
}

fn show_run() -> Operation {
    let op = gated("gateway_show_run", "Show a workflow run", "One run with its status, output and timeline.")
        .parameter(workflow_name())
        .parameter(run_id());
    respond(op, &[(200, "the run"), (404, "no such workflow or run")])
}

fn signal_run() -> Operation {
    let op = gated("gateway_signal_run", "Signal a workflow run", "Delivers SIGNAL with the body as its payload.")
        .parameter(workflow_name())
        .parameter(run_id())
        .parameter(path_param("signal", "the signal's name"))
        .request_body(Some(bytes_body("*/*", "the payload, at most 512 KiB")));
    respond(
        op,
        &[
            (202, "the signal is stored for the run"),
            (404, "no such workflow or run"),
            (409, "the run has ended"),
            (413, "over 512 KiB"),
            (429, "too many signals wait for the run"),
            (503, "the journal could not be written; retry"),
        ],
    )
}

fn cancel_run() -> Operation {
    let op = gated("gateway_cancel_run", "Cancel a workflow run", "Cancels the run; its compensations run.")
        .parameter(workflow_name())
        .parameter(run_id());
    respond(op, &[(202, "cancelling"), (404, "no such workflow or run"), (409, "the run has ended")])
}
