# Shared by the service scripts: source it after setting SCRIPT (the name shown in logs) and,
# optionally, SERVICE_LOG (a log file whose tail `die` shows).

log() { printf '[%s %s] %s\n' "$(date +%T)" "$SCRIPT" "$*" >&2; }
die() {
  log "ERROR: $*"
  [ -n "${SERVICE_LOG:-}" ] && [ -f "$SERVICE_LOG" ] && tail -n 20 "$SERVICE_LOG" >&2
  exit 1
}
# A stopped daemon lingers as a zombie until PID 1 reaps it (~2 s here): a zombie counts as gone.
running() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
pid_alive() { [ -s "$1" ] && running "$(head -n1 "$1" | tr -d ' ')"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { local t=200; until port_open "$1"; do t=$((t - 1)); [ $t -gt 0 ] || return 1; sleep 0.1; done; }
# Installs the Debian packages named that are not installed yet.
apt_need() {
  local p missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local A=(apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || "${A[@]}" update >&2
  "${A[@]}" install --no-install-recommends "${missing[@]}" >&2 \
    || { "${A[@]}" update >&2 && "${A[@]}" install --no-install-recommends "${missing[@]}" >&2; }
}
