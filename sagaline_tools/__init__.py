"""sagaline's tools: the operator CLI (`sagaline ...`), the benchmark and the demos.

They stand on top of everything else (contracts, the `sagaline` runtime, the orchestrator, the
workers and the migrations) and nothing imports them: the processes run without this package.
"""
