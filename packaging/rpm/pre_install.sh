# edgeroll %pre: the agent's user, and the group whose members may act on rollouts through the
# API socket (the same as /usr/lib/sysusers.d/edgeroll.conf, for systems without sysusers in rpm).
getent group edgeroll >/dev/null || groupadd --system edgeroll
getent passwd edgeroll >/dev/null || useradd --system --gid edgeroll \
    --home-dir /var/lib/edgeroll --no-create-home --shell /sbin/nologin \
    --comment "edgeroll agent" edgeroll
exit 0
