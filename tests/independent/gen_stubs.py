"""Generate Python ext_authz stubs from Envoy's own .proto files (shipped in envoy-types).

Usage: gen_stubs.py PROTO_ROOT OUT_DIR
Compiles envoy/service/auth/v3/external_auth.proto and its import closure with grpc_tools.
"""
import pathlib
import re
import sys

from grpc_tools import protoc
import grpc_tools

TARGET = "envoy/service/auth/v3/external_auth.proto"
ROOTS = ["data-plane-api", "googleapis", "protoc-gen-validate", "xds", "cel-spec/proto"]


def main() -> None:
    proto_root = pathlib.Path(sys.argv[1])
    out_dir = pathlib.Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    includes = [proto_root / root for root in ROOTS]

    def locate(name: str) -> pathlib.Path | None:
        for include in includes:
            if (include / name).exists():
                return include / name
        return None

    closure, pending = set(), [TARGET]
    while pending:
        name = pending.pop()
        if name in closure or name.startswith("google/protobuf/"):
            continue
        path = locate(name)
        if path is None:
            sys.exit(f"cannot find {name} under {proto_root}")
        closure.add(name)
        pending.extend(re.findall(r'^import\s+(?:public\s+)?"([^"]+)";', path.read_text(), re.M))

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{well_known}"] + [f"-I{i}" for i in includes]
    args += [f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + sorted(closure)
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # No __init__.py files: implicit namespace packages let the generated `google.*` modules
    # coexist with the protobuf runtime's `google.protobuf`.
    print(f"generated {len(closure)} protos into {out_dir}")


if __name__ == "__main__":
    main()
