"""What the tool knows: the store kinds read from schemas/ (`stores`), the transform (`transform`),
the manifest (`manifest`), the work directory's layout and trust (`workdir`), where things are
(`config`), what the user may do (`access`), keeping store contents out of outputs (`redact`),
and how commands report progress (`progress`; the CLI draws it)."""
