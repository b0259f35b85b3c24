"""The x86-64 ISA levels the host-kernel tests run at (the `isa` fixture, conftest.py here):
native (whatever this CPU has), x86-64-v3 (AVX2 + FMA, no AVX-512) and x86-64 (SSE2, no FMA)."""
ISA_LEVELS = ["native", "x86-64-v3", "x86-64"]
