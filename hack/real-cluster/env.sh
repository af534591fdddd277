# env.sh: paths and settings shared by the real-cluster scripts. Sourced, never run.
#
# There is one real cluster per machine: it listens on fixed ports (6443,
# 10250, 2379/2380), owns the cni0 bridge, and keeps its data in fixed
# directories. Builds are cached; per-run state is not.
#
#   TANDEM_REAL_CACHE  node binaries, build tools and image tarballs
#                      (default ${XDG_CACHE_HOME:-~/.cache}/tandem/real-cluster)
#   TANDEM_REAL_RUN    PKI, configs, logs and pid files of the running cluster
#                      (default /tmp/tandem-real); down.sh removes it
#   TANDEM_REAL_APISERVER_ARGS  extra kube-apiserver flags

REAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$REAL_DIR/../.." && pwd)
TOOLS_SH=$REPO_ROOT/hack/tools.sh

CACHE=${TANDEM_REAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/real-cluster}
RUN=${TANDEM_REAL_RUN:-/tmp/tandem-real}
VAR=/var/lib/tandem-real  # containerd root, etcd data, kubelet root, local volumes
STATE=/run/tandem-real    # containerd state and socket
CTR_SOCK=$STATE/containerd/containerd.sock
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
CLUSTER_DNS=10.96.0.10
# kube-proxy opens NodePorts on every local address; keep them clear of the
# ports kwokctl clusters use (32xxx).
NODEPORT_RANGE=30000-30999
# The Debian release of the Redis, PostgreSQL and builder images. Every other
# version (Kubernetes, CoreDNS, BuildKit, crane) is pinned in hack/tools.sh.
DEBIAN_SUITE=bookworm

export KUBECONFIG=$RUN/pki/admin.kubeconfig
export GOTOOLCHAIN=local GOWORK=off

log() { printf '[real-cluster] %s %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[real-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# ctr_k8s ARGS...: ctr against this cluster's containerd, in the CRI namespace.
ctr_k8s() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# cluster_ours: the containerd on $CTR_SOCK is the one this run started.
cluster_ours() {
	local f=$RUN/pids/containerd.pid
	[ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# cluster_foreign: something serves $CTR_SOCK that this run did not start.
cluster_foreign() {
	cluster_ours && return 1
	[ -S "$CTR_SOCK" ] && ctr --address "$CTR_SOCK" version >/dev/null 2>&1
}
