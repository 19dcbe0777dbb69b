"""Can the service read a store? Strict JSON and its canonical bytes (`jsonio`), the one parse,
fast path then general (`parsing`), schemas compiled to types (`structs`) and the typed decode
(`typed`), validation and its messages (`validate`), members named twice (`duplicates`), and
counts straight from bytes (`summary`)."""
