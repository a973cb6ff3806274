//! `nimbus schema`: the JSON Schema of `nimbus.toml`, for editors and CI.
pub(crate) fn run() -> anyhow::Result<()> {
    println!("{}", nimbus_manifest::json_schema());
    Ok(())
}
