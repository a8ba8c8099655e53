"""The serving defaults that TF Serving uses too, shared by the server and its CLI without
importing gRPC or TensorFlow."""

GRPC_PORT = 8500
REST_PORT = 8501
# gRPC's client default; TF Serving itself accepts up to 2 GiB.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
