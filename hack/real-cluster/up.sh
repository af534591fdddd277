#!/usr/bin/env bash
# up.sh: a real single-node Kubernetes on this machine: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy as plain
# processes, containerd + runc running real containers, bridge CNI,
# kube-proxy in iptables mode and CoreDNS. No registry is used: every image is
# built by build-images.sh and imported with `ctr images import`.
#
# Usage: hack/real-cluster/up.sh      (root; hack/real-cluster/down.sh stops it)
# Env:   see env.sh; TANDEM_REAL_APISERVER_ARGS adds kube-apiserver flags.
# Prints "export KUBECONFIG=..." at the end. Step timings go to $RUN/timings.
set -euo pipefail
source "$(dirname "$0")/env.sh"

[ "$(id -u)" = 0 ] || die "run as root: overlay mounts, network namespaces, a bridge, iptables and cgroups"
NODE=$(hostname | tr '[:upper:]' '[:lower:]')
NODE_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$NODE_IP" ] || NODE_IP=$(hostname -I | awk '{print $1}')
[ -n "$NODE_IP" ] || die "cannot find this node's IPv4 address"

# One cluster per machine, guarded by a lock held while up.sh runs and by the
# pid files while the cluster runs.
mkdir -p "$RUN/pids" "$RUN/logs" "$RUN/etc" "$VAR" "$STATE"
exec 8>"$RUN/up.lock"
flock -n 8 || die "another up.sh is running"
for f in "$RUN"/pids/*.pid; do
	[ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && die "$(basename "$f" .pid) is still running: run down.sh first"
done
cluster_foreign && die "a containerd this run did not start serves $CTR_SOCK"
for port in 6443 10250 2379 2380; do
	ss -Hltn "sport = :$port" | grep -q . && die "port $port is in use: another cluster runs here"
done

: >"$RUN/timings"
T_ALL=$SECONDS
step() { STEP=$*; T=$SECONDS; log "== $STEP"; }
step_done() { printf '%-40s %5ss\n' "$STEP" "$((SECONDS - T))" | tee -a "$RUN/timings" >&2; }
# daemon NAME CMD...: run CMD in the background, logging to $RUN/logs/NAME.log.
daemon() {
	local name=$1
	shift
	"$@" >"$RUN/logs/$name.log" 2>&1 &
	echo $! >"$RUN/pids/$name.pid"
}
# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_until() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || die "timed out waiting for $what (logs: $RUN/logs)"
		sleep 1
	done
}

# The kubelet and kube-proxy change these; down.sh puts them back.
SYSCTLS="net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max
net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables"
[ -f "$RUN/sysctl.saved" ] || for s in $SYSCTLS; do
	v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"
done >"$RUN/sysctl.saved"

step "apt packages"
PACKAGES="containerd runc iptables conntrack containernetworking-plugins debootstrap jq curl openssl iproute2"
if ! dpkg -s $PACKAGES >/dev/null 2>&1; then
	apt-get install -y --no-install-recommends $PACKAGES >"$RUN/logs/apt.log" 2>&1 ||
		{ apt-get update >>"$RUN/logs/apt.log" 2>&1 && apt-get install -y --no-install-recommends $PACKAGES >>"$RUN/logs/apt.log" 2>&1; } ||
		die "apt-get install failed: $(tail -n 5 "$RUN/logs/apt.log")"
fi
step_done

step "binaries (hack/tools.sh)"
for t in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
	declare "BIN_${t//-/_}=$("$TOOLS_SH" bin "$t")"
done
step_done

step "images (build-images.sh)"
"$REAL_DIR/build-images.sh" >"$RUN/logs/build-images.log" 2>&1 || { tail -n 40 "$RUN/logs/build-images.log" >&2; die "image build failed"; }
step_done

step "containerd"
CNI_DIR=$RUN/etc/cni
mkdir -p "$CNI_DIR"
cat >"$RUN/etc/containerd.toml" <<TOML
version = 2
root = "$VAR/containerd"
state = "$STATE/containerd"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "tandem.local/pause:1"
  # This machine's capability bounding set has no CAP_SYS_RESOURCE, so no
  # process may lower its oom_score_adj; without this every sandbox fails
  # with "can't get final child's PID from pipe: EOF". Scores are clamped to
  # containerd's own, so OOM-kill order between QoS classes is not a real node's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_DIR"
TOML
cat >"$CNI_DIR/10-tandem-real.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "tandem-real",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
daemon containerd containerd --config "$RUN/etc/containerd.toml"
wait_until 30 containerd ctr --address "$CTR_SOCK" version
for image in pause coredns redis postgres tandem; do
	ctr_k8s images import "$CACHE/images/$image.tar" >>"$RUN/logs/import.log" 2>&1 ||
		die "import of $image.tar failed: $(tail -n 3 "$RUN/logs/import.log")"
done
step_done

step "certificates"
"$REAL_DIR/pki.sh" "$RUN/pki" "$NODE_IP" "$NODE" >"$RUN/logs/pki.log" 2>&1
P=$RUN/pki
step_done

step "etcd and kube-apiserver"
daemon etcd "$BIN_etcd" --name tandem-real --data-dir "$VAR/etcd" \
	--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster tandem-real=http://127.0.0.1:2380 --unsafe-no-fsync --quota-backend-bytes 2147483648
wait_until 60 etcd curl -sf http://127.0.0.1:2379/health
# shellcheck disable=SC2086 # extra flags are a word list
daemon kube-apiserver "$BIN_kube_apiserver" \
	--etcd-servers http://127.0.0.1:2379 \
	--bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$NODE_IP" \
	--service-cluster-ip-range "$SVC_CIDR" --service-node-port-range "$NODEPORT_RANGE" \
	--tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" --client-ca-file "$P/ca.crt" \
	--kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority "$P/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
	--authorization-mode Node,RBAC --allow-privileged=true \
	--enable-admission-plugins "NodeRestriction${TANDEM_REAL_ADMISSION_PLUGINS:+,$TANDEM_REAL_ADMISSION_PLUGINS}" \
	--profiling=false ${TANDEM_REAL_APISERVER_ARGS:-}
wait_until 180 kube-apiserver "$BIN_kubectl" get --raw /readyz
step_done

step "controller-manager and scheduler"
daemon kube-controller-manager "$BIN_kube_controller_manager" \
	--kubeconfig "$P/controller-manager.kubeconfig" \
	--authentication-kubeconfig "$P/controller-manager.kubeconfig" --authorization-kubeconfig "$P/controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --service-account-private-key-file "$P/sa.key" --root-ca-file "$P/ca.crt" \
	--cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
	--use-service-account-credentials=true --service-cluster-ip-range "$SVC_CIDR" --leader-elect=false
daemon kube-scheduler "$BIN_kube_scheduler" \
	--kubeconfig "$P/scheduler.kubeconfig" \
	--authentication-kubeconfig "$P/scheduler.kubeconfig" --authorization-kubeconfig "$P/scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false
wait_until 90 "the default ServiceAccount" "$BIN_kubectl" -n default get serviceaccount default
step_done

step "kubelet and kube-proxy"
mkdir -p "$VAR/kubelet"
cat >"$RUN/etc/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 controllers; kubelet 1.37 refuses them by default.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTR_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
podCIDR: $POD_CIDR
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
resolvConf: /etc/resolv.conf
podLogsDir: $VAR/pod-logs
failSwapOn: false
serializeImagePulls: false
# Images are imported, never pulled: image GC must not remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
maxPods: 60
YAML
daemon kubelet "$BIN_kubelet" --config "$RUN/etc/kubelet.yaml" \
	--kubeconfig "$P/kubelet.kubeconfig" --root-dir "$VAR/kubelet" \
	--hostname-override "$NODE" --node-ip "$NODE_IP" --v=1
cat >"$RUN/etc/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $P/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: $NODE
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0}
YAML
daemon kube-proxy "$BIN_kube_proxy" --config "$RUN/etc/kube-proxy.yaml"
wait_until 120 "node $NODE Ready" sh -c "'$BIN_kubectl' get node '$NODE' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
step_done

step "cluster DNS and storage"
sed -e "s|@CLUSTER_DNS@|$CLUSTER_DNS|g" "$REAL_DIR/manifests/coredns.yaml" | "$BIN_kubectl" apply -f - >/dev/null
# No dynamic provisioner: a default StorageClass of static local volumes, one
# directory each. Released volumes are not reused (reclaim policy Retain).
{
	cat <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
YAML
	for i in $(seq 1 "${TANDEM_REAL_VOLUMES:-32}"); do
		mkdir -p "$VAR/volumes/pv$i"
		cat <<YAML
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv$i}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $VAR/volumes/pv$i}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE]}]}]
YAML
	done
} | "$BIN_kubectl" apply -f - >/dev/null
"$BIN_kubectl" -n kube-system rollout status deploy/coredns --timeout=180s >/dev/null
step_done

printf '%-40s %5ss\n' "cluster up (total)" "$((SECONDS - T_ALL))" | tee -a "$RUN/timings" >&2
echo "export KUBECONFIG=$KUBECONFIG"
