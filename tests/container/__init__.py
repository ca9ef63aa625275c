"""sagaline's container image built and run with podman (marker: container)."""
