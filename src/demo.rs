//! STUB (replaced by the lead): `edgeroll demo`.

/// Run the demo; `json` prints only the JSON summary line at the end besides progress on stderr.
pub async fn run(json: bool) -> anyhow::Result<()> {
    let _ = json;
    Ok(())
}
