//! A counter actor (`nimbus:actor/handler`): `incr` adds the input (a decimal, default 1) to
//! `count` and answers the new value; `get` answers it; `fail` sets `count` to 999 and returns an
//! error (the write must be rolled back); `trap` sets it and panics (rolled back too).
wit_bindgen::generate!({
    path: "../../../wit/nimbus-actor",
    world: "nimbus:actor/actor",
    generate_all,
});

use exports::nimbus::actor::handler::Guest;
use nimbus::actor::state;

struct Counter;

fn count() -> i64 {
    state::get("count").and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
}

impl Guest for Counter {
    fn invoke(key: String, method: String, input: Vec<u8>) -> Result<Vec<u8>, String> {
        match method.as_str() {
            "incr" => {
                let by: i64 = std::str::from_utf8(&input).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1);
                let n = count() + by;
                state::set("count", n.to_string().as_bytes());
                Ok(n.to_string().into_bytes())
            }
            "get" => Ok(count().to_string().into_bytes()),
            "fail" => {
                state::set("count", b"999");
                Err(format!("counter {key} refused"))
            }
            "trap" => {
                state::set("count", b"999");
                panic!("counter {key} trapped")
            }
            other => Err(format!("unknown method `{other}`")),
        }
    }
}

export!(Counter);
