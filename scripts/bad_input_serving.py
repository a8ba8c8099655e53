"""Bad-input suite: sends malformed and extreme requests over gRPC and checks each status
code, and that the server still answers after every one.

    python scripts/bad_input_serving.py --root saved_models [--model NAME]
    python scripts/bad_input_serving.py --model-dir MODEL_DIR     (export, then serve)
    python scripts/bad_input_serving.py --target HOST:PORT --model NAME [--tf-serving]

Cases: empty and whitespace-only strings, a 100,000-character text, invalid UTF-8, inputs
of different batch sizes (models with two inputs), wrong dtype / rank / input name, an
empty batch, a message over the size limit, unknown model / version / signature. The
expected codes are kbert serve's (see kbert.serving.signatures); with --tf-serving, the
over-limit message is expected to pass (real TF Serving accepts messages up to 2 GiB;
a wrong rank or batch size it leaves to the graph, and a kbert export's graph refuses
both with INVALID_ARGUMENT). Exit code 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from serving_common import add_server_args, model_name, running_server  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_args(parser)
    parser.add_argument("--tf-serving", action="store_true",
                        help="expect real TF Serving's codes where they differ")
    parser.add_argument("--limit-bytes", type=int, default=4 * 1024 * 1024,
                        help="the server's message limit (kbert serve: 4 MiB)")
    args = parser.parse_args(argv)

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from kbert.serving import PredictionClient
    from kbert.serving.client import to_array

    OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
    with running_server(args) as target, PredictionClient(target) as client:
        name = model_name(client, args)
        names = sorted(client.metadata(name)["serving_default"]["inputs"])
        channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def send(inputs, model=name, signature="serving_default", version=None):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = signature
            if version is not None:
                request.model_spec.version.value = version
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(
                    value if isinstance(value, np.ndarray) else to_array(key, value)))
            try:
                response = stub.Predict(request, timeout=120)
            except grpc.RpcError as error:
                return error.code(), (error.details() or "")[:150], None
            rows = {tuple(d.size for d in p.tensor_shape.dim)[:1]
                    for p in response.outputs.values()}
            return OK, "", rows

        def each(texts):
            return {n: list(texts) for n in names}

        long_text = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
        over = "x" * (args.limit_bytes + 1024)
        cases = [
            ("empty string", each([""]), OK, 1),
            ("whitespace-only strings", each([" ", "\t\n", "\u3000\u00a0"]), OK, 3),
            ("100,000-character text", each([long_text]), OK, 1),
            ("invalid UTF-8", {n: [b"caf\xc3 \xff\xfe broken \xe2\x82"] for n in names}, OK, 1),
            ("empty batch", {n: np.array([], dtype=object) for n in names}, OK, 0),
            ("wrong dtype (int32)", {n: np.array([1, 2], np.int32) for n in names}, INVALID,
             None),
            ("wrong rank ([B, 1] strings)",
             {n: np.array([[b"a"], [b"b"]], dtype=object) for n in names},
             INVALID, None),
            ("wrong input name", {"not_an_input": ["hello"]}, INVALID, None),
            ("message over the size limit", each([over]),
             OK if args.tf_serving else grpc.StatusCode.RESOURCE_EXHAUSTED, None),
        ]
        if len(names) >= 2:
            mismatched = {n: ["a", "b"] if i == 0 else ["a", "b", "c"]
                          for i, n in enumerate(names)}
            cases.append((f"{names[0]} and {names[1]} of different batch sizes", mismatched,
                          INVALID, None))
        else:
            print(f"(skipped: different batch sizes needs a model with two inputs; "
                  f"{name!r} takes {names})")
        cases += [
            ("unknown model", each(["hello"]), grpc.StatusCode.NOT_FOUND, None, "no_such_model"),
            ("unknown version", each(["hello"]), grpc.StatusCode.NOT_FOUND, None, name,
             "serving_default", 987654),
            ("unknown signature", each(["hello"]), grpc.StatusCode.FAILED_PRECONDITION, None,
             name, "no_such_signature"),
        ]
        failures = 0
        print(f"{'case':<45} {'expected':<20} {'got':<20} still serving")
        for case in cases:
            title, inputs, expected, rows = case[:4]
            got, message, out_rows = send(inputs, *case[4:])
            alive = send(each(["the server still answers"]))[0] == OK
            good = got == expected and alive and (
                rows is None or out_rows is None or out_rows <= {(rows,)})
            failures += not good
            print(f"{title:<45} {expected.name:<20} {got.name:<20} "
                  f"{'yes' if alive else 'NO'}{'' if good else '   <-- MISMATCH'}")
            if message:
                print(f"    {message}")
        channel.close()
    print(f"{len(cases) - failures}/{len(cases)} cases as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
