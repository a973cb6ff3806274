//! Tests of the supply-chain scans, on realistic inputs built here.
mod advisories;
mod inventory;
mod lockfiles;
mod reach;
mod signatures;
mod versions;

/// `value` as an unsigned LEB128 number.
fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A section: its id, its size and its contents.
fn section(id: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(leb128(contents.len()));
    out.extend(contents);
    out
}

/// A custom section (id 0): its name, then `data`.
fn custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut contents = leb128(name.len());
    contents.extend(name.as_bytes());
    contents.extend(data);
    section(0, &contents)
}

/// `json`, zlib-compressed as `cargo auditable` does.
fn zlib(json: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(json, 6)
}

/// An empty core module with a `.dep-v0` section holding `json`.
fn module_with_deps(json: &str) -> Vec<u8> {
    let mut module = wat::parse_str("(module (func (export \"run\")))").expect("valid wat");
    module.extend(custom_section(".dep-v0", &zlib(json.as_bytes())));
    module
}
