"""The disk and the process: every write (`durable`), where a path leads and how a file is opened
and identified (`ondisk`), the lock (`lock`), worker processes (`workers`), signals
(`interrupts`)."""
