# Shared by tools/deb-container-check and tools/image: the Debian 12 base image
# localhost/debian:bookworm-local, made once (debootstrap --variant=minbase, then
# podman import; TB_BOOKWORM_ROOTFS names an existing rootfs to import instead).
# Source after tools/lib/common.sh, as root, with podman set up (tools/podman-setup).

TB_BOOKWORM_IMAGE=localhost/debian:bookworm-local

# Make $TB_BOOKWORM_IMAGE unless podman has it. Needs the network the first time
# (debootstrap from deb.debian.org); the rootfs is cached in $TASKBUS_CACHE_DIR.
tb_bookworm_image() {
  podman image exists "$TB_BOOKWORM_IMAGE" && return 0
  local rootfs=${TB_BOOKWORM_ROOTFS:-$TASKBUS_CACHE_DIR/bookworm-rootfs}
  if [[ ! -x $rootfs/usr/bin/apt-get ]]; then
    command -v debootstrap >/dev/null || tb_die "debootstrap is missing: apt-get install debootstrap"
    tb_say "debootstrap bookworm (minbase) into $rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null \
      || tb_die "debootstrap failed"
  fi
  tb_say "importing $rootfs as $TB_BOOKWORM_IMAGE"
  tar -C "$rootfs" -c . | podman import - "$TB_BOOKWORM_IMAGE" >/dev/null || tb_die "podman import failed"
}
