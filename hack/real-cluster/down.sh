#!/usr/bin/env bash
# down.sh: stops everything up.sh started and puts the host back as it was,
# keeping only the build cache and the apt packages. Processes are stopped by
# the pids up.sh recorded (and the shims of our own containerd, found by its
# socket path), never by name. Safe to run twice, or when up.sh failed half-way.
#
# Env: TANDEM_REAL_KEEP_LOGS=DIR copies the logs there before they are removed.
set -uo pipefail
source "$(dirname "$0")/env.sh"
[ "$(id -u)" = 0 ] || die "run as root"

if cluster_foreign; then
	log "a containerd that this run did not start serves $CTR_SOCK: leaving it alone"
	exit 1
fi

stop() { # stop NAME: SIGTERM, SIGKILL after 10 s
	local file=$RUN/pids/$1.pid pid
	[ -f "$file" ] || return 0
	pid=$(cat "$file")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null
		for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -9 "$pid" 2>/dev/null
		log "stopped $1 ($pid)"
	fi
	rm -f "$file"
}

# Node agents first, so nothing restarts the containers removed next.
stop kube-proxy
stop kubelet
if [ -S "$CTR_SOCK" ]; then
	for t in $(ctr_k8s task ls -q 2>/dev/null); do ctr_k8s task kill -s SIGKILL "$t" >/dev/null 2>&1; done
	sleep 1
	for t in $(ctr_k8s task ls -q 2>/dev/null); do ctr_k8s task rm -f "$t" >/dev/null 2>&1; done
	for c in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers rm "$c" >/dev/null 2>&1; done
fi
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd
stop containerd
for pid in $(pgrep -f -- "-address $CTR_SOCK" 2>/dev/null); do
	kill -9 "$pid" 2>/dev/null && log "killed shim $pid"
done

# Mounts and network namespaces left under our directories.
for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($VAR|$STATE|/run/netns/cni-)" | sort -r); do
	umount -l "$m" 2>/dev/null
done
for ns in /run/netns/cni-*; do
	[ -e "$ns" ] && { umount "$ns" 2>/dev/null; rm -f "$ns"; }
done

# The bridge and the iptables chains of kube-proxy and the CNI plugins.
ip link del cni0 2>/dev/null && log "deleted cni0"
for table in nat filter mangle; do
	# (no grep -q: with pipefail a closed pipe would make iptables-save fail)
	iptables-save -t $table 2>/dev/null | grep -E 'KUBE-|CNI-' >/dev/null || continue
	iptables-save -t $table | grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*(KUBE-|CNI-)' |
		sed 's/^-A /-D /' | while read -r rule; do eval iptables -t $table $rule 2>/dev/null; done
	chains=$(iptables-save -t $table | sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p')
	for c in $chains; do iptables -t $table -F "$c" 2>/dev/null; done
	for c in $chains; do iptables -t $table -X "$c" 2>/dev/null; done
done
if ip6tables-save 2>/dev/null | grep KUBE- >/dev/null; then
	for table in nat filter mangle; do
		ip6tables-save -t $table | grep -E '^-A [A-Z]+ .*KUBE-' | sed 's/^-A /-D /' |
			while read -r rule; do eval ip6tables -t $table $rule 2>/dev/null; done
		chains=$(ip6tables-save -t $table | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p')
		for c in $chains; do ip6tables -t $table -F "$c" 2>/dev/null; done
		for c in $chains; do ip6tables -t $table -X "$c" 2>/dev/null; done
	done
fi

if [ -f "$RUN/sysctl.saved" ]; then
	while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null || log "could not restore $kv"; done <"$RUN/sysctl.saved"
	log "restored $(wc -l <"$RUN/sysctl.saved") sysctls"
fi

# Pod cgroups (cgroupfs driver) and the kubelet's log links.
for h in /sys/fs/cgroup/*/; do
	for d in kubepods k8s.io; do
		[ -d "$h$d" ] && find "$h$d" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
done
for l in /var/log/containers/*.log; do
	[ -L "$l" ] && case "$(readlink "$l")" in "$VAR"/*) rm -f "$l" ;; esac
done
rmdir /var/log/containers /var/log/pods 2>/dev/null

if [ -n "${TANDEM_REAL_KEEP_LOGS:-}" ] && [ -d "$RUN/logs" ]; then
	mkdir -p "$TANDEM_REAL_KEEP_LOGS" && cp -r "$RUN/logs/." "$TANDEM_REAL_KEEP_LOGS/" && log "logs kept in $TANDEM_REAL_KEEP_LOGS"
fi
rm -rf "$VAR" "$STATE" /var/lib/cni/networks/tandem-real /var/lib/cni/results/tandem-real-* "$RUN"
log "down"
