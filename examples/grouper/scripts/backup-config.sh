#!/bin/sh
# Runbook steps 4 and 12 ("backup all of the configuration"): the Grouper properties of the
# running daemon container, saved beside the stack file as backups/config-LABEL.tar.
# cutover runs it from the stack file's directory.
#
# usage: scripts/backup-config.sh LABEL
set -eu
label=${1:?usage: backup-config.sh LABEL}
container=$(docker ps -q --filter label=io.cutover.stack=grouper \
    --filter label=io.cutover.service=daemon | head -n 1)
if [ -z "$container" ]; then
    echo "no grouper daemon container runs yet: nothing to back up"
    exit 0
fi
mkdir -p backups
docker cp "$container:/opt/grouper/grouperWebapp/WEB-INF/classes" - >"backups/config-$label.tar"
echo "configuration of container $container saved in backups/config-$label.tar"
