# edgeroll %post: enable and start on install ($1 = 1); restart on upgrade ($1 = 2), which keeps
# workloads running (KillMode=process: they are adopted again).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now edgeroll.service >/dev/null 2>&1 || :
    else
        systemctl try-restart edgeroll.service >/dev/null 2>&1 || :
    fi
fi
exit 0
