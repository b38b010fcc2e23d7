# xnode-install SETTINGS.json: run by xnode-install.service (see installer.nix for the rules).
# Every refusal happens before the first write; the only writes are sfdisk, mkfs, nixos-install.
# Sourced with XNODE_INSTALL_FUNCTIONS_ONLY=1 (tests), it only defines its functions.

read_settings() {
  settings=$1
  toplevel=$(jq -r .toplevel "$settings")
  disk=$(jq -r '.disk // empty' "$settings")
  wipe=$(jq -r .wipe "$settings")
  layout=$(jq -r .layout "$settings")
  min_bytes=$(jq -r .minDiskBytes "$settings")
  after=$(jq -r .afterInstall "$settings")
  root_uuid=$(jq -r .partUuids.root "$settings")
  esp_uuid=$(jq -r .partUuids.esp "$settings")
}

log() { echo "xnode-install: $*" >&2; }
refuse() {
  log "REFUSED: $*"
  log "nothing was written to any disk"
  echo "$*" > /run/xnode-install/refused
  exit 1
}

# Whole disks backing what we booted from (the ISO/USB stick, or a test VM's root): never targets.
# By device number, so it also works when the mount source is a name like /dev/root that has no
# node in stage 2. (A disk with anything mounted is refused anyway, see why_not.)
boot_disks() {
  local mnt majmin name parent
  for mnt in /iso /nix/.ro-store /; do
    majmin=$(findmnt -nvo MAJ:MIN "$mnt" 2>/dev/null) || continue
    majmin=${majmin// /}
    [ -e "/sys/dev/block/$majmin" ] || continue
    name=$(basename "$(readlink -f "/sys/dev/block/$majmin")")
    parent=$(lsblk -ndo PKNAME "/dev/$name" 2>/dev/null || true)
    echo "/dev/${parent:-$name}"
  done
}

# The stable name of a disk (its first /dev/disk/by-id link), for messages that tell the operator
# what to bake in; the kernel name when it has none.
stable_name() {
  local dev=$1 link
  for link in /dev/disk/by-id/*; do
    [ -e "$link" ] || continue
    case "$link" in *-part[0-9]*) continue ;; esac
    if [ "$(readlink -f "$link")" = "$dev" ]; then echo "$link"; return; fi
  done
  echo "$dev"
}

# The first MiB is all zeros. Data without any signature wipefs knows (plain dm-crypt, a raw
# volume, a database on the bare device) starts somewhere: a disk is empty only when blank there.
blank_start() {
  cmp -s -n 1048576 "$1" /dev/zero
}

is_empty() {
  local dev=$1
  [ "$(lsblk -nro NAME "$dev" | wc -l)" -eq 1 ] && [ -z "$(wipefs --noheadings "$dev")" ] &&
    blank_start "$dev"
}

# Prints why DEV may not be used (nothing when it may). $2 = "explicit" when the operator named it.
why_not() {
  local dev=$1 how=$2
  [ -b "$dev" ] || { echo "$dev is not a block device"; return; }
  [ "$(lsblk -ndo TYPE "$dev")" = disk ] || { echo "$dev is not a whole disk"; return; }
  [ "$(lsblk -ndo RM "$dev" | tr -d ' ')" = 0 ] || { echo "$dev is removable media"; return; }
  [ "$(lsblk -ndo RO "$dev" | tr -d ' ')" = 0 ] || { echo "$dev is read-only"; return; }
  # Captured first: with pipefail, `boot_disks | grep -q` could fail on SIGPIPE and miss a match.
  local boots
  boots=$(boot_disks)
  if grep -qxF "$dev" <<< "$boots"; then echo "$dev is the medium this installer booted from"; return; fi
  if [ -n "$(lsblk -nro MOUNTPOINTS "$dev" | tr -d '[:space:]')" ]; then
    echo "$dev has mounted filesystems"; return
  fi
  [ "$(lsblk -ndbo SIZE "$dev" | tr -d ' ')" -ge "$min_bytes" ] || {
    echo "$dev is smaller than $((min_bytes / 1024 / 1024 / 1024)) GiB"; return; }
  if ! is_empty "$dev"; then
    if [ "$how" = explicit ] && [ "$wipe" = true ]; then return; fi
    echo "$dev holds partitions or data (to erase it, build the image with --disk $(stable_name "$dev") --wipe)"
  fi
}

# A disk other than DEV that already has one of this node's partition UUIDs (an earlier install
# of the same node): after installing, the installed system's mounts by PARTUUID would be
# ambiguous. Prints the partition.
uuid_taken() {
  local dev=$1
  # Raw output drops empty columns' places: PARTUUID last, so a disk's row (no parent, no UUID)
  # has no third field.
  lsblk -nrpo NAME,PKNAME,PARTUUID | awk -v r="$root_uuid" -v e="$esp_uuid" -v d="$dev" \
    'tolower($3) == tolower(r) || tolower($3) == tolower(e) { if ($2 != d) { print $1; exit } }'
}

# True when DEV already holds this exact system (installed earlier by this image).
already_installed() {
  local dev=$1 root found=1
  root=$(lsblk -nrpo NAME,PARTUUID "$dev" | awk -v r="$root_uuid" 'tolower($2) == tolower(r) { print $1; exit }')
  [ -n "$root" ] || return 1
  mkdir -p /run/xnode-install/probe
  mount -o ro "$root" /run/xnode-install/probe 2>/dev/null || return 1
  if [ "$(cat /run/xnode-install/probe/etc/xnode-installed-system 2>/dev/null)" = "$toplevel" ]; then
    found=0
  fi
  umount /run/xnode-install/probe
  return "$found"
}

choose_disk() {
  local dev reason candidates=()
  if [ -n "$disk" ]; then
    dev=$(readlink -f "$disk" || true)
    if [ -z "$dev" ] || [ ! -e "$disk" ]; then
      refuse "the disk $disk baked into this image does not exist on this machine"
    fi
    if already_installed "$dev"; then refuse "$disk already holds this XnodeOS; remove the installer medium and reboot"; fi
    reason=$(why_not "$dev" explicit)
    [ -z "$reason" ] || refuse "$reason"
    echo "$dev"
    return
  fi
  while read -r dev; do
    reason=$(why_not "$dev" auto)
    if [ -z "$reason" ]; then candidates+=("$dev"); else log "skipping: $reason"; fi
  done < <(lsblk -dnpo NAME,TYPE | awk '$2 == "disk" { print $1 }')
  case ${#candidates[@]} in
    1) echo "${candidates[0]}" ;;
    0) refuse "no empty, non-removable disk of at least $((min_bytes / 1024 / 1024 / 1024)) GiB found; build the image with --disk /dev/disk/by-id/... (and --wipe to erase it)" ;;
    *) refuse "several empty disks (${candidates[*]}); choose one with --disk $(for d in "${candidates[@]}"; do stable_name "$d"; done | paste -sd' ')" ;;
  esac
}

main() {
  read_settings "$1"
  mkdir -p /run/xnode-install
  udevadm settle
  target=$(choose_disk)
  local taken
  taken=$(uuid_taken "$target")
  [ -z "$taken" ] || refuse "$taken already carries a partition UUID of this node (an earlier install of it); wipe or remove that disk first"
  log "installing XnodeOS onto $target ($(stable_name "$target"))"

  wipefs --all --quiet "$target"
  sfdisk --quiet --wipe always --wipe-partitions always "$target" < "$layout"
  udevadm settle
  local parts
  mapfile -t parts < <(lsblk -nrpo NAME,TYPE "$target" | awk '$2 == "part" { print $1 }')
  [ "${#parts[@]}" -eq 2 ] || { log "expected 2 partitions on $target, found ${#parts[@]}"; exit 1; }
  mkfs.vfat -F 32 -n ESP "${parts[0]}" >/dev/null
  mkfs.ext4 -q -F -L nixos "${parts[1]}"
  udevadm settle
  # The installed system mounts both by these partition UUIDs (modules/base.nix), never by label.
  if [ ! -e "/dev/disk/by-partuuid/$root_uuid" ] || [ ! -e "/dev/disk/by-partuuid/$esp_uuid" ]; then
    log "the new partitions do not carry the node's partition UUIDs"; exit 1
  fi

  mount "/dev/disk/by-partuuid/$root_uuid" /mnt
  mkdir -p /mnt/boot
  mount -o fmask=0077,dmask=0077 "/dev/disk/by-partuuid/$esp_uuid" /mnt/boot
  log "copying the embedded system closure (no network needed)"
  nixos-install --root /mnt --system "$toplevel" --no-root-passwd --no-channel-copy < /dev/null
  mkdir -p /mnt/etc
  echo "$toplevel" > /mnt/etc/xnode-installed-system
  sync
  umount -R /mnt
  touch /run/xnode-install/done
  log "done: XnodeOS is installed on $target"

  case "$after" in
    reboot) log "rebooting into XnodeOS; remove the installer medium"; systemctl reboot ;;
    poweroff) systemctl poweroff ;;
    none) ;;
  esac
}

if [ "${XNODE_INSTALL_FUNCTIONS_ONLY:-}" != 1 ]; then
  main "$@"
fi
