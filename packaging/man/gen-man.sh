#!/bin/sh
# Write the edgeroll(1) man page from the binary's own `--help` output, so the page never drifts
# from the command line. Usage: gen-man.sh EDGEROLL_BINARY OUTPUT_FILE (a `.gz` name is gzipped).
# Needs only sh, awk and gzip. The binary must run on this machine (use the host's build).
set -eu
bin=$1
out=$2
version=$("$bin" --version | awk '{print $2}')
date=${SOURCE_DATE_EPOCH:+$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)}
date=${date:-$(date -u +%Y-%m-%d)}

# help2roff MODE: turn clap's short help (stdin) into roff. MODE "top" keeps the global options;
# MODE "sub" drops them (they are listed once under OPTIONS) and the usage line becomes a synopsis.
help2roff() {
    awk -v mode="$1" '
    function esc(s) {
        gsub(/\\/, "\\e", s)
        gsub(/-/, "\\-", s)
        sub(/^[.'"'"']/, "\\\\\\&&", s)
        return s
    }
    function flush() {
        if (item == "") return
        # The top-level command list has its own section; global options are listed once.
        if (section == "Commands:") { item = ""; text = ""; return }
        if (!(mode == "sub" && (item ~ /--socket|--config|--help/))) {
            printf ".TP\n.B %s\n%s\n", esc(item), esc(text)
        }
        item = ""; text = ""
    }
    BEGIN { section = "about" }
    /^Usage: / { flush(); sub(/^Usage: /, ""); usage = $0; if (mode == "sub") printf ".PP\n.B %s\n", esc(usage); section = "usage"; next }
    /^[A-Z][A-Za-z ]*:$/ { flush(); section = $0; if (section == "Arguments:") printf ".PP\n%s\n", section; next }
    /^$/ { flush(); next }
    section == "about" { if (mode == "sub") printf "%s\n", esc($0); next }
    /^  +[^ ]/ && match($0, /[^ ]  +[^ ]/) {
        flush()
        line = $0; sub(/^ +/, "", line)
        split_at = match(line, /  +/)
        item = substr(line, 1, split_at - 1)
        text = substr(line, split_at); sub(/^ +/, "", text)
        next
    }
    /^  +[^ ]/ { t = $0; sub(/^ +/, "", t); if (item != "") text = text " " t; else { item = t; text = "" }; next }
    END { flush() }
    '
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    printf '.TH EDGEROLL 1 "%s" "edgeroll %s" "User Commands"\n' "$date" "$version"
    printf '.SH NAME\nedgeroll \\- progressive delivery (canary, blue\\-green, analysis gates) for one edge site\n'
    printf '.SH SYNOPSIS\n.B edgeroll\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]\n'
    printf '.SH DESCRIPTION\n'
    "$bin" --help | awk 'NR == 1' | sed 's/\\/\\e/g; s/-/\\-/g'
    printf '.PP\nOne binary is both the agent (\\fBedgeroll run\\fR, started by systemd as \\fBedgeroll.service\\fR)\n'
    printf 'and the command line that talks to it over a local socket.\n'
    printf '.SH OPTIONS\nThese options are accepted by every command.\n'
    "$bin" --help | help2roff top
    printf '.SH COMMANDS\n'
    for command in $("$bin" --help | awk '/^Commands:/ { on = 1; next } /^$/ { on = 0 } on { print $1 }'); do
        [ "$command" = help ] && continue
        printf '.SS %s\n' "$command"
        "$bin" "$command" -h | help2roff sub
    done
    cat <<'ROFF'
.SH FILES
.TP
.I /etc/edgeroll/edgeroll.toml
The agent configuration (a conffile: upgrades keep your changes).
.TP
.I /etc/edgeroll/edgeroll.d/*.toml
Drop\-ins merged over it in name order, key by key.
.TP
.I /var/lib/edgeroll/
The state: \fIstate.db\fR (the embedded store) and \fIlogs/\fR (one log file per workload).
.TP
.I /run/edgeroll/edgeroll.sock
The local API (HTTP and JSON), mode 0660, group \fBedgeroll\fR. Anyone who can connect may read;
only root, the agent's user and members of group \fBedgeroll\fR may act on rollouts.
.SH ENVIRONMENT
.TP
.B EDGEROLL_CONFIG
The agent config, as \fB\-\-config\fR.
.TP
.B EDGEROLL_SOCKET
The API socket, as \fB\-\-socket\fR.
.TP
.B EDGEROLL_KEY
The secret key of \fBedgeroll sign\fR, as \fB\-\-key\fR.
.TP
.B EDGEROLL_KEY_PASSWORD
The password of the secret key, for \fBedgeroll keygen\fR and \fBedgeroll sign\fR; without it they
ask on the terminal.
.TP
.B EDGEROLL_LOG
The log filter of \fBedgeroll run\fR (for example \fBinfo\fR or \fBedgeroll=debug\fR).
.SH EXIT STATUS
.TP
.B 0
Done.
.TP
.B 1
The operation failed or was refused; the message says why.
.TP
.B 2
Bad command line.
.TP
.B 78
Invalid configuration or desired document; every error is printed, one per line, as
FILE:LINE:COLUMN: message.
.SH NOTES
The service runs as user \fBedgeroll\fR with \fBKillMode=process\fR, so workloads survive
\fBsystemctl restart edgeroll\fR and are adopted again; \fBsystemctl stop edgeroll\fR therefore
leaves them running. Stop them too with \fBsystemctl kill \-\-kill\-whom=all edgeroll\fR
(older systemd spells it \fB\-\-kill\-who=all\fR). Logs: \fBjournalctl \-u edgeroll\fR; each line
carries its priority, so \fBjournalctl \-u edgeroll \-p warning\fR shows only warnings and errors.
With \fBmetrics.listen\fR set, the agent serves its own \fB/metrics\fR (OpenMetrics) there.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR systemd.service (5)
ROFF
} >"$tmp"
case $out in
*.gz) gzip -9n <"$tmp" >"$out" ;;
*) cp "$tmp" "$out" ;;
esac
