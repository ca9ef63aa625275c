"""sagaline's runtime: what every sagaline process stands on.

Settings, messaging (delivery with retry and parking, publishing, declaring, batching), the
service shell (FastStream app, health, metrics, batch consumers), the database engine, logs,
tracing and TLS. It imports only `contracts`; the orchestrator and the workers build on it, and
the tools (`sagaline_tools`) on all of them.
"""

__version__ = "0.1.0"
