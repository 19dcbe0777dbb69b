"""The commands, one module each, holding that command's steps: `run` (and the dry run; its heavy
step per store is `prepare`, its backups `backups`, the recovery of interrupted runs `recovery`),
`verify` (with `additive`), `rollback`, `check`, `prune`, `compare`, `schema_diff`, `wrappers`.
They print nothing and exit nothing: the CLI does."""
