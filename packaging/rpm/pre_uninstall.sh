# edgeroll %preun: on erase ($1 = 0) stop and disable the agent, then stop the workloads it
# started (they outlive the agent by design and nothing would manage them once it is gone).
# The state in /var/lib/edgeroll is kept.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now edgeroll.service >/dev/null 2>&1 || :
    systemctl kill --kill-whom=all --signal=SIGTERM edgeroll.service >/dev/null 2>&1 || :
fi
exit 0
