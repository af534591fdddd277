#!/usr/bin/env bash
# build-images.sh: every image the real cluster runs, built here, where no
# container registry can be reached, and written as tarballs to
# $CACHE/images for `ctr images import`.
#
#   ghcr.io/tandem-dev/tandem:e2e   the project's own Dockerfile, unchanged,
#                                   built by BuildKit (buildkitd, OCI worker)
#   docker.io/library/redis:7.0     the images the operator's defaults name;
#   docker.io/library/postgres:15   they honour the official images' contract
#                                   (uid/gid 999, /data, PGDATA, POSTGRES_*)
#   tandem.local/pause:1            the sandbox image (containerd sandbox_image)
#   tandem.local/coredns:1          cluster DNS
#
# The Dockerfile's base images (golang:1.26 and gcr.io/distroless/static:nonroot)
# are stand-ins built here with the same layout, served by a registry on
# loopback that buildkitd uses as the mirror of docker.io and gcr.io. Every
# Debian file comes from one debootstrap of the apt mirror the machine uses.
#
# Usage: build-images.sh [layers]   (root; "layers" only makes the Debian layer)
# Each image is rebuilt only when its inputs change; the project image always
# goes through BuildKit, whose cache makes an unchanged tree cost seconds.
set -euo pipefail
source "$(dirname "$0")/env.sh"

LAYERS=$CACHE/layers
IMAGES=$CACHE/images
PROJECT_IMAGE=${PROJECT_IMAGE:-ghcr.io/tandem-dev/tandem:e2e}
REGISTRY_PORT=${TANDEM_REAL_REGISTRY_PORT:-5999}
REGISTRY=127.0.0.1:$REGISTRY_PORT
mkdir -p "$LAYERS" "$IMAGES"
work=$(mktemp -d /tmp/tandem-images.XXXXXX)
pids=()
cleanup() {
	local p
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do
		for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
		kill -9 "$p" 2>/dev/null
	done
	mountpoint -q "$work/debian/proc" 2>/dev/null && umount "$work/debian/proc"
	rm -rf "$work"
	return 0
}
trap cleanup EXIT
crane() { "$("$TOOLS_SH" bin crane)" "$@"; }

# pack DIR OUT: a layer tarball of DIR's contents, owners kept numerically.
pack() {
	(cd "$1" && tar --numeric-owner --sort=name --mtime=@0 -cf "$2.tmp" $(ls -A))
	mv "$2.tmp" "$2"
}

# fingerprint FILES...: a short hash of the named files' contents.
fingerprint() { cat "$@" | sha256sum | cut -c1-16; }

# --- Debian: debootstrap + redis-server + postgresql-15 ----------------------
debian_layer() {
	local out=$LAYERS/debian-$DEBIAN_SUITE.tar
	[ -f "$out" ] && return
	local mirror r=$work/debian
	mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
	mirror=${mirror:-http://deb.debian.org/debian}
	log "debootstrap $DEBIAN_SUITE from $mirror"
	debootstrap --variant=minbase --include=ca-certificates "$DEBIAN_SUITE" "$r" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	# No service starts in a chroot; postgresql-common makes no cluster (the
	# entrypoint runs initdb into PGDATA, as the official image does).
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod +x "$r/usr/sbin/policy-rc.d"
	mkdir -p "$r/etc/postgresql-common"
	echo 'create_main_cluster = false' >"$r/etc/postgresql-common/createcluster.conf"
	mount -t proc proc "$r/proc"
	chroot "$r" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends redis-server postgresql-15 && apt-get clean' >"$work/chroot.log" 2>&1 ||
		{ tail -n 30 "$work/chroot.log" >&2; die "apt-get install in the Debian chroot failed"; }
	umount "$r/proc"
	rm -rf "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r/usr/sbin/policy-rc.d"
	: >"$r/etc/resolv.conf"
	pack "$r" "$out"
	rm -rf "$r"
}

# --- small layers --------------------------------------------------------------
# user_overlay DIR NAME: /etc/passwd and /etc/group of the Debian layer with
# NAME moved to uid/gid 999, as in the official images.
user_overlay() {
	local dir=$1 name=$2 base=$work/etc
	mkdir -p "$base" "$dir/etc"
	[ -f "$base/passwd" ] || tar -xf "$LAYERS/debian-$DEBIAN_SUITE.tar" -C "$work" ./etc/passwd ./etc/group 2>/dev/null ||
		tar -xf "$LAYERS/debian-$DEBIAN_SUITE.tar" -C "$work" etc/passwd etc/group
	if awk -F: -v n="$name" '$3 == 999 && $1 != n' "$base/passwd" "$base/group" | grep -q .; then
		die "uid/gid 999 is taken in the Debian layer"
	fi
	awk -F: -v OFS=: -v n="$name" '$1 == n { $3 = 999; $4 = 999 } 1' "$base/passwd" >"$dir/etc/passwd"
	awk -F: -v OFS=: -v n="$name" '$1 == n { $3 = 999 } 1' "$base/group" >"$dir/etc/group"
	chmod 644 "$dir/etc/passwd" "$dir/etc/group"
}

store_layers() {
	local key
	key=$(fingerprint "$0" "$REAL_DIR"/images/*/*)
	[ -f "$LAYERS/redis-$key.tar" ] && [ -f "$LAYERS/postgres-$key.tar" ] && { STORE_KEY=$key; return; }
	local r=$work/redis p=$work/postgres
	user_overlay "$r" redis
	install -d -o 999 -g 999 -m 755 "$r/data"
	install -d -o 999 -g 999 -m 750 "$r/var/lib/redis"
	install -D -m 755 "$REAL_DIR/images/redis/redis-server" "$r/usr/local/bin/redis-server"
	pack "$r" "$LAYERS/redis-$key.tar"
	user_overlay "$p" postgres
	install -d -o 999 -g 999 -m 755 "$p/var/lib/postgresql"
	# As in the official image: any uid may create PGDATA's parent entries.
	install -d -o 999 -g 999 -m 1777 "$p/var/lib/postgresql/data"
	install -d -o 999 -g 999 -m 3777 "$p/run/postgresql" # /var/run is /run in Debian
	install -d -m 755 "$p/docker-entrypoint-initdb.d"
	install -D -m 755 "$REAL_DIR/images/postgres/docker-entrypoint.sh" "$p/usr/local/bin/docker-entrypoint.sh"
	pack "$p" "$LAYERS/postgres-$key.tar"
	STORE_KEY=$key
}

# The builder stand-in: the Go of this machine at /usr/local/go, as in golang:1.26.
go_layer() {
	local goroot ver out
	goroot=$(go env GOROOT)
	ver=$(go env GOVERSION)
	out=$LAYERS/go-$ver.tar
	[ -f "$out" ] || {
		mkdir -p "$work/go/usr/local"
		cp -a "$goroot" "$work/go/usr/local/go"
		mkdir -p "$work/go/go/bin" && chmod 1777 "$work/go/go"
		pack "$work/go" "$out"
	}
	GO_LAYER=$out
}

# The machine's CA bundle: the module proxy may only be reachable through a
# TLS proxy whose CA the host trusts, and so must the builder.
ca_layer() {
	mkdir -p "$work/ca/etc/ssl/certs"
	cp /etc/ssl/certs/ca-certificates.crt "$work/ca/etc/ssl/certs/"
	pack "$work/ca" "$LAYERS/ca.tar"
}

# The runtime base stand-in: the layout of gcr.io/distroless/static:nonroot
# (users root, nobody and nonroot 65532, CA certificates, time zones, /tmp).
distroless_layer() {
	local d=$work/distroless out=$LAYERS/distroless-static.tar
	[ -f "$out" ] && return
	mkdir -p "$d/etc/ssl/certs" "$d/usr/share" "$d/home/nonroot" "$d/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$d/etc/passwd"
	printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$d/etc/group"
	cp /etc/ssl/certs/ca-certificates.crt "$d/etc/ssl/certs/"
	[ -d /usr/share/zoneinfo ] && cp -a /usr/share/zoneinfo "$d/usr/share/"
	chown 65532:65532 "$d/home/nonroot"
	chmod 700 "$d/home/nonroot"
	chmod 1777 "$d/tmp"
	pack "$d" "$out"
}

binary_layer() { # binary_layer NAME BINARY: a layer with BINARY at /NAME
	mkdir -p "$work/$1"
	cp "$2" "$work/$1/$1"
	pack "$work/$1" "$LAYERS/$1.tar"
}

# --- the registry and the images in it ----------------------------------------
start_registry() {
	if ss -Hltn "sport = :$REGISTRY_PORT" | grep -q .; then
		die "port $REGISTRY_PORT is in use; set TANDEM_REAL_REGISTRY_PORT"
	fi
	"$("$TOOLS_SH" bin crane)" registry serve --address "$REGISTRY" >"$work/registry.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 1 50); do curl -sf "http://$REGISTRY/v2/" >/dev/null && return; sleep 0.2; done
	die "the registry on $REGISTRY did not start: $(cat "$work/registry.log")"
}

# image REF BASE LAYERS... -- MUTATE_FLAGS...: push an image made of LAYERS on
# BASE (an image in the registry, or "" for none).
image() {
	local ref=$1 base=$2 layers=()
	shift 2
	while [ "$1" != -- ]; do layers+=(-f "$1"); shift; done
	shift
	if [ -n "$base" ]; then
		crane append --insecure -b "$REGISTRY/$base" "${layers[@]}" -t "$REGISTRY/$ref" >/dev/null 2>&1
	else
		crane append --insecure --oci-empty-base "${layers[@]}" -t "$REGISTRY/$ref" >/dev/null 2>&1
	fi
	crane mutate --insecure --set-platform linux/amd64 "$REGISTRY/$ref" "$@" -t "$REGISTRY/$ref" >/dev/null 2>&1
}

# stop_signal REF SIGNAL: set the image's StopSignal (crane mutate has no flag).
stop_signal() {
	crane config --insecure "$REGISTRY/$1" | jq -c --arg s "$2" '.config.StopSignal = $s' |
		crane edit config --insecure "$REGISTRY/$1" 2>/dev/null
}

# save NAME REF TAG: the image at REF as $IMAGES/NAME.tar, a docker-save
# archive that names it TAG (the name the cluster's manifests use). The
# archive is written anew: appending to a tar in place can land inside the
# padding of the last layer and corrupt it.
save() {
	local dir=$work/save-$1
	mkdir -p "$dir"
	crane pull --insecure --format=legacy "$REGISTRY/$2" "$work/$1.pulled.tar" 2>/dev/null
	tar -xf "$work/$1.pulled.tar" -C "$dir"
	rm -f "$work/$1.pulled.tar"
	jq -c --arg tag "$3" '.[0].RepoTags = [$tag]' "$dir/manifest.json" >"$dir/manifest.json.new"
	mv "$dir/manifest.json.new" "$dir/manifest.json"
	(cd "$dir" && tar -cf "$IMAGES/$1.tar.tmp" $(ls -A))
	mv "$IMAGES/$1.tar.tmp" "$IMAGES/$1.tar"
	rm -rf "$dir"
}

build_project_image() {
	local cfg=$work/buildkitd.toml sock=$work/buildkitd.sock BUILDKITD BUILDCTL
	BUILDKITD=$("$TOOLS_SH" bin buildkitd)
	BUILDCTL=$("$TOOLS_SH" bin buildctl)
	mkdir -p "$CACHE/buildkit"
	cat >"$cfg" <<TOML
root = "$CACHE/buildkit"
[worker.oci]
  enabled = true
  snapshotter = "overlayfs"
  gc = true
  gckeepstorage = "8GB"
[worker.containerd]
  enabled = false
# The Dockerfile's bases come from the loopback registry: it is the mirror
# of their registries, and nothing else can be reached here.
[registry."docker.io"]
  mirrors = ["$REGISTRY"]
[registry."gcr.io"]
  mirrors = ["$REGISTRY"]
[registry."$REGISTRY"]
  http = true
TOML
	"$BUILDKITD" --config "$cfg" --addr "unix://$sock" --oci-worker-net host >"$work/buildkitd.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 1 100); do "$BUILDCTL" --addr "unix://$sock" debug workers >/dev/null 2>&1 && break; sleep 0.2; done
	"$BUILDCTL" --addr "unix://$sock" debug workers >/dev/null || die "buildkitd did not start: $(tail -n 20 "$work/buildkitd.log")"
	log "building $PROJECT_IMAGE from the Dockerfile (BuildKit)"
	"$BUILDCTL" --addr "unix://$sock" build --progress plain \
		--frontend dockerfile.v0 --local context="$REPO_ROOT" --local dockerfile="$REPO_ROOT" \
		--opt platform=linux/amd64 \
		--output "type=docker,name=$PROJECT_IMAGE,dest=$IMAGES/tandem.tar.tmp" >"$work/build.log" 2>&1 ||
		{ tail -n 40 "$work/build.log" >&2; tail -n 20 "$work/buildkitd.log" >&2; die "docker build of the project image failed"; }
	mv "$IMAGES/tandem.tar.tmp" "$IMAGES/tandem.tar"
}

# context_key: a hash of the Dockerfile and every file of the build context
# (.dockerignore keeps it to go.mod, go.sum and the Go source trees).
context_key() {
	(cd "$REPO_ROOT" && find Dockerfile .dockerignore go.mod go.sum api cmd controllers internal runtime -type f -print0 |
		sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

main() {
	local t0=$SECONDS deb=tandem-real/debian:1 support_key project_key
	debian_layer
	log "Debian layer ready (${SECONDS}s)"
	# "layers" stops here: the slow download, without any tool build.
	[ "${1:-}" = layers ] && return
	store_layers
	support_key=$(printf '%s\n' "$STORE_KEY" "$(fingerprint "$REAL_DIR/pause/main.go")" "$("$TOOLS_SH" bin coredns)" | sha256sum | cut -c1-16)
	project_key=$(printf '%s\n' "$(context_key)" "$(go env GOVERSION)" | sha256sum | cut -c1-16)
	if [ "$(cat "$IMAGES/support.key" 2>/dev/null)" = "$support_key" ] && [ "$(cat "$IMAGES/tandem.key" 2>/dev/null)" = "$project_key" ]; then
		log "images up to date"
		return
	fi
	start_registry
	crane append --insecure --oci-empty-base -f "$LAYERS/debian-$DEBIAN_SUITE.tar" -t "$REGISTRY/$deb" >/dev/null 2>&1

	if [ "$(cat "$IMAGES/tandem.key" 2>/dev/null)" != "$project_key" ]; then
		go_layer
		ca_layer
		distroless_layer
		image library/golang:1.26 "$deb" "$GO_LAYER" "$LAYERS/ca.tar" -- \
			--env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			--env GOPATH=/go --env GOLANG_VERSION="$(go env GOVERSION | sed 's/^go//')" \
			--env GOPROXY="$(go env GOPROXY)" --env GOSUMDB="$(go env GOSUMDB)" --env GOTOOLCHAIN=local --workdir /go
		image distroless/static:nonroot "" "$LAYERS/distroless-static.tar" -- \
			--user 65532 --workdir /home/nonroot \
			--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
		build_project_image
		echo "$project_key" >"$IMAGES/tandem.key"
	fi
	if [ "$(cat "$IMAGES/support.key" 2>/dev/null)" != "$support_key" ]; then
		image library/redis:7.0 "$deb" "$LAYERS/redis-$STORE_KEY.tar" -- \
			--workdir /data --cmd redis-server --exposed-ports 6379/tcp
		image library/postgres:15 "$deb" "$LAYERS/postgres-$STORE_KEY.tar" -- \
			--env PATH=/usr/local/sbin:/usr/local/bin:/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			--env PG_MAJOR=15 --env PGDATA=/var/lib/postgresql/data --env LANG=C.UTF-8 \
			--entrypoint docker-entrypoint.sh --cmd postgres --exposed-ports 5432/tcp
		# Fast shutdown, as the official image: SIGTERM would wait for every client.
		stop_signal library/postgres:15 SIGINT
		(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause.bin" ./hack/real-cluster/pause)
		binary_layer pause "$work/pause.bin"
		image tandem-real/pause:1 "" "$LAYERS/pause.tar" -- --entrypoint /pause
		distroless_layer
		binary_layer coredns "$("$TOOLS_SH" bin coredns)"
		image tandem-real/coredns:1 "" "$LAYERS/distroless-static.tar" "$LAYERS/coredns.tar" -- \
			--entrypoint /coredns --exposed-ports 53/udp,53/tcp
		save redis library/redis:7.0 docker.io/library/redis:7.0
		save postgres library/postgres:15 docker.io/library/postgres:15
		save pause tandem-real/pause:1 tandem.local/pause:1
		save coredns tandem-real/coredns:1 tandem.local/coredns:1
		echo "$support_key" >"$IMAGES/support.key"
		log "support images ready ($((SECONDS - t0))s)"
	fi

	log "images ready in $IMAGES ($((SECONDS - t0))s)"
}
main "$@"
