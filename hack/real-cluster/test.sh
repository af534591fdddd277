#!/usr/bin/env bash
# test.sh: `make test-e2e-real`. Brings the real cluster up, runs the
# end-to-end suite in test/realcluster against it, and always tears it down.
#
# The API server runs with the OwnerReferencesPermissionEnforcement admission
# plugin (OpenShift and hardened clusters enable it), so the whole suite is a
# pass under it. On failure the cluster's logs are kept in
# ${TANDEM_REAL_ARTIFACTS:-/tmp/tandem-real-artifacts}.
#
# Env: GO_TEST_FLAGS (e.g. '-run TestRealCluster/helm -v'), TANDEM_REAL_KEEP=1
# leaves the cluster running afterwards (down.sh stops it).
set -euo pipefail
source "$(dirname "$0")/env.sh"

[ "$(id -u)" = 0 ] || die "the real cluster needs root (mounts, bridge, iptables, cgroups)"
# The whole run holds the machine's one cluster.
exec 9>/run/lock/tandem-real-cluster.lock
flock -n 9 || die "another real-cluster run holds /run/lock/tandem-real-cluster.lock"

artifacts=${TANDEM_REAL_ARTIFACTS:-/tmp/tandem-real-artifacts}
started=$SECONDS
status=1
finish() {
	set +e
	if [ "$status" != 0 ]; then
		rm -rf "$artifacts" && mkdir -p "$artifacts"
		if [ -f "$KUBECONFIG" ]; then
			"$("$TOOLS_SH" bin kubectl)" get all,pvc,pv,events -A -o wide >"$artifacts/objects.txt" 2>&1
		fi
		export TANDEM_REAL_KEEP_LOGS=$artifacts/logs
		log "failed; logs in $artifacts"
	fi
	if [ "${TANDEM_REAL_KEEP:-}" = 1 ]; then
		log "cluster left running (TANDEM_REAL_KEEP=1): export KUBECONFIG=$KUBECONFIG; hack/real-cluster/down.sh stops it"
	else
		"$REAL_DIR/down.sh"
	fi
	[ -f "$RUN/timings" ] && cat "$RUN/timings" >&2
	log "test-e2e-real: $((SECONDS - started))s"
}
trap finish EXIT

"$REAL_DIR/down.sh" >/dev/null 2>&1 || true # leftovers of an earlier run of ours
TANDEM_REAL_ADMISSION_PLUGINS=OwnerReferencesPermissionEnforcement "$REAL_DIR/up.sh"
cp "$RUN/timings" "$RUN/timings.up" 2>/dev/null || true
cd "$REPO_ROOT"
# shellcheck disable=SC2086 # GO_TEST_FLAGS is a word list
go test -tags e2e_real -count=1 -timeout 60m -v ${GO_TEST_FLAGS:-} ./test/realcluster/
status=0
