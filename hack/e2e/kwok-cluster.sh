#!/usr/bin/env bash
# Starts and removes a local Kubernetes control plane with kwokctl's binary
# runtime: the real kube-apiserver, etcd, kube-controller-manager and
# kube-scheduler built by hack/tools.sh, plus kwok-controller, which plays the
# kubelet of fake nodes (pods get scheduled and reported Running, but no
# container runs). Nothing is downloaded: every binary comes from the tools
# cache, and kwokctl keeps its state under KWOK_WORKDIR.
#
# Usage:
#   hack/e2e/kwok-cluster.sh create <name> <kubeconfig> [nodes]
#   hack/e2e/kwok-cluster.sh delete <name>
#
# Environment:
#   KWOK_WORKDIR  kwokctl state (default ${XDG_CACHE_HOME:-$HOME/.cache}/tandem/kwok);
#                 the same value must be used for create and delete.
#   KWOK_SERVICE_CIDR  the Services' ClusterIP range (default: kwokctl's, a /24,
#                 which holds 254 ClusterIP Services)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="${root}/hack/tools.sh"
export KWOK_WORKDIR="${KWOK_WORKDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/kwok}"

log() { printf '[kwok-cluster] %s\n' "$*" >&2; }
die() { printf '[kwok-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

bin() { "${tools}" bin "$1" || die "hack/tools.sh bin $1 failed"; }

# Fake nodes, a default StorageClass and statically provisioned volumes.
# kwok does not provision volumes, so the PersistentVolumes are created up
# front; the real kube-controller-manager binds the operator's claims to them,
# which lets StatefulSet pods schedule and lets storageRetentionPolicy be
# observed on real PersistentVolumeClaims.
cluster_fixtures() {
	local nodes=$1 i
	for ((i = 1; i <= nodes; i++)); do
		cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-${i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-${i}
    kubernetes.io/role: agent
    topology.kubernetes.io/zone: zone-${i}
    type: kwok
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
YAML
	done
	cat <<'YAML'
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: kwok-static
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
YAML
	for ((i = 1; i <= 12; i++)); do
		cat <<YAML
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: kwok-pv-${i}
  labels:
    type: kwok
spec:
  capacity:
    storage: 100Gi
  accessModes: ["ReadWriteOnce"]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: kwok-static
  hostPath:
    path: /var/lib/kwok-fake/pv-${i}
YAML
	done
}

create() {
	local name=$1 kubeconfig=$2 nodes=${3:-3}
	local kwokctl kubectl
	kwokctl="$(bin kwokctl)"
	kubectl="$(bin kubectl)"
	local apiserver etcd kcm sched kwok
	apiserver="$(bin kube-apiserver)"
	etcd="$(bin etcd)"
	kcm="$(bin kube-controller-manager)"
	sched="$(bin kube-scheduler)"
	kwok="$(bin kwok)"
	mkdir -p "${KWOK_WORKDIR}" "$(dirname "${kubeconfig}")"
	log "creating cluster ${name} (state in ${KWOK_WORKDIR}, kubeconfig ${kubeconfig})"
	# KWOK_KUBE_VERSION makes kwokctl pass flags that suit the binaries we built.
	local kube_version extra=()
	kube_version="$("${apiserver}" --version | awk '{print $2}')"
	if [[ -n ${KWOK_SERVICE_CIDR:-} ]]; then
		extra=(--extra-args "kube-apiserver=service-cluster-ip-range=${KWOK_SERVICE_CIDR}"
			--extra-args "kube-controller-manager=service-cluster-ip-range=${KWOK_SERVICE_CIDR}")
	fi
	[[ ${kube_version} == v1.* ]] || die "cannot read the version of ${apiserver}"
	KWOK_KUBE_VERSION="${kube_version}" \
		KWOK_KUBECTL_BINARY="${kubectl}" \
		"${kwokctl}" create cluster \
		--name "${name}" \
		--runtime binary \
		--kubeconfig "${kubeconfig}" \
		--kube-apiserver-binary "${apiserver}" \
		--etcd-binary "${etcd}" \
		--kube-controller-manager-binary "${kcm}" \
		--kube-scheduler-binary "${sched}" \
		--kwok-controller-binary "${kwok}" \
		--kube-authorization=true \
		--kube-admission=true \
		"${extra[@]}" \
		--wait 2m \
		--timeout 5m
	cluster_fixtures "${nodes}" | "${kubectl}" --kubeconfig "${kubeconfig}" apply -f - >&2
	log "cluster ${name} is up with ${nodes} kwok nodes"
}

delete() {
	local name=$1 kwokctl
	kwokctl="$(bin kwokctl)"
	log "deleting cluster ${name}"
	"${kwokctl}" delete cluster --name "${name}"
}

case "${1:-}" in
create)
	[[ $# -ge 3 ]] || die "usage: $0 create <name> <kubeconfig> [nodes]"
	create "$2" "$3" "${4:-3}"
	;;
delete)
	[[ $# -eq 2 ]] || die "usage: $0 delete <name>"
	delete "$2"
	;;
*)
	die "usage: $0 create <name> <kubeconfig> [nodes] | delete <name>"
	;;
esac
