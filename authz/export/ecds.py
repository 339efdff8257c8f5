"""The exported filters as Envoy extension-config-discovery (ECDS) files, swapped atomically.

Layout of DIR (the same trick as a Kubernetes ConfigMap mount, which Envoy's file-based config
sources are built to watch, docs "xDS protocol: filesystem subscriptions"):

    DIR/.v-<revision>-<n>/authz.deny.yaml  ...   one directory per written version
    DIR/..data -> .v-<revision>-<n>                swapped with one rename()
    DIR/authz.deny.yaml -> ..data/authz.deny.yaml  what Envoy reads (path_config_source)

Each file is a DiscoveryResponse holding one TypedExtensionConfig. Envoy watches DIR
(`watched_directory`) and reloads every filter when `..data` moves, so it never reads a
half-written file, and one version's filters are always read together from one directory.
Only an accepted set is written: a rejected set never reaches Envoy. The export is hybrid, so
the hosts Envoy cannot decide alone are decided by the service through ext_authz.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING

from authz.envoy_bootstrap import CLUSTERS_FILE, ECDS_FILTERS

if TYPE_CHECKING:
    from authz.export.render import EnvoyExport

DATA = "..data"  # also named in authz/envoy_bootstrap.py ecds_http_filters
TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def write_ecds(directory: str, export: EnvoyExport, revision: str) -> str:
    """Write `export`'s filters (a hybrid export: ECDS_FILTERS) into `directory` and switch
    `..data` to them; return the
    version directory's name. Older versions are removed afterwards."""
    os.makedirs(directory, exist_ok=True)
    n = 0
    while os.path.exists(os.path.join(directory, f".v-{revision}-{n}")):
        n += 1
    version = f".v-{revision}-{n}"
    staging = os.path.join(directory, version)
    os.mkdir(staging)
    for f in export.filter_dicts():
        resource = {"@type": TYPED_EXTENSION_CONFIG, **f}
        document = {"version_info": f"{revision}-{n}", "resources": [resource]}
        path = os.path.join(staging, f"{f['name']}.yaml")
        with open(path, "w", encoding="utf-8") as out:
            json.dump(document, out)  # JSON is YAML; Envoy picks the parser by extension
            out.flush()
            os.fsync(out.fileno())
    clusters = {
        "version_info": f"{revision}-{n}",
        "resources": [{"@type": CLUSTER, **c} for c in export.clusters],
    }
    with open(os.path.join(staging, CLUSTERS_FILE), "w", encoding="utf-8") as out:
        json.dump(clusters, out)
        out.flush()
        os.fsync(out.fileno())
    for name in [*(f"{name}.yaml" for name, _ in ECDS_FILTERS), CLUSTERS_FILE]:
        link = os.path.join(directory, name)
        if not os.path.islink(link):
            os.symlink(os.path.join(DATA, name), link)
    tmp = os.path.join(directory, f"{DATA}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(version, tmp)
    os.replace(tmp, os.path.join(directory, DATA))  # the one atomic step
    for entry in os.listdir(directory):
        if entry.startswith(".v-") and entry != version:
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    return version
