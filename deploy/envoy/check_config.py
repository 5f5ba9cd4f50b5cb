"""Checks an Envoy bootstrap file against Envoy's v3 API without an Envoy binary: every field
name, enum value and typed_config "@type" must exist in the protos (from the xds-protos
package), and no field used may be deprecated. It does not check the protos' validation rules
(required fields, ranges) nor start anything: `envoy --mode validate` does, where installed.

    python3 check_config.py envoy.yaml      # needs: pip install xds-protos pyyaml
"""

import importlib
import pkgutil
import sys

import yaml
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory


def type_urls(node):
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def load_package(full_name):
    """Imports every generated module of the message's proto package, registering its types."""
    package = full_name.rsplit(".", 1)[0]
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def deprecated_fields(message, path):
    if isinstance(message, any_pb2.Any):
        name = message.TypeName()
        inner = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))()
        message.Unpack(inner)
        yield from deprecated_fields(inner, f"{path}[{name}]")
        return
    for field, value in message.ListFields():
        here = f"{path}.{field.name}"
        if field.GetOptions().deprecated:
            yield here
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values() if field.message_type.fields_by_name["value"].message_type else []
        elif field.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            yield from deprecated_fields(item, here)


def main(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    load_package("envoy.config.bootstrap.v3.Bootstrap")
    for url in set(type_urls(config)):
        load_package(url.split("/", 1)[1])
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    bootstrap = json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
    deprecated = list(deprecated_fields(bootstrap, "bootstrap"))
    for field in deprecated:
        print(f"{path}: deprecated field {field}", file=sys.stderr)
    if deprecated:
        sys.exit(1)
    print(f"{path}: every field and type exists in Envoy's v3 API ({len(set(type_urls(config)))} typed configs)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "envoy.yaml")
