#!/usr/bin/env bash
# Generates the permission sets of every Sequent NATS user: nats/permissions.conf (gateway,
# analyst, the demo's service types) and nats/permissions-dev.conf (service users that exist
# only in development: example, test). The users themselves (names and passwords) are in
# accounts.conf (dev) and prod.conf.example. Two files because nats-server refuses a config
# that defines a variable nobody uses, and production has no example/test users.
#
# Why generated: NATS wildcards match whole tokens only, so "the consumers accounts-p00 ..
# accounts-p15" cannot be written as a pattern; they are listed one by one.
#
#   nats/gen-users.sh           rewrite both files
#   nats/gen-users.sh --check   exit 1 if they are not what this script makes
#
# To add a service type: add its name to SERVICES, run this script, add its user to
# accounts.conf and prod.conf.example, commit the result.
set -euo pipefail

SERVICES=(accounts users transfers nectar bfaf explorer)
DEV_SERVICES=(example test)
PARTITIONS=16                   # consumers <service>-p00 .. -p15 (bus-gateway --partitions)
STREAM=EVENTS                   # the event stream (bus-gateway --stream)
INDEX=EVENTS_IX                 # the correlation index stream
BUCKET=sequent_members          # membership KV bucket (protocol::subjects::MEMBERS_BUCKET)
INDEXER=sequent-indexer         # the gateways' durable consumer keeping the index
QUEUE=bus-gateway               # the gateways' queue group

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

durables() { # every durable consumer on the event stream
  local s p
  for s in "${SERVICES[@]}" "${DEV_SERVICES[@]}"; do
    for ((p = 0; p < PARTITIONS; p++)); do printf '%s-p%02d\n' "$s" "$p"; done
  done
  echo "$INDEXER"
}

# Deleting or redefining a durable consumer loses or changes its delivery state (contract item
# 3). Users who may delete and create their own ephemeral consumers (ordered consumers are
# deleted and re-created by the client, so the allow rules are `DELETE.<stream>.*` and
# `CREATE.<stream>.>`) are denied the durables by name.
protected_durables() {
  local d
  while read -r d; do
    echo "      \"\$JS.API.CONSUMER.DELETE.$STREAM.$d\""
    echo "      \"\$JS.API.CONSUMER.CREATE.$STREAM.$d\""
    echo "      \"\$JS.API.CONSUMER.CREATE.$STREAM.$d.>\""
  done < <(durables)
}

# Pulling from a durable (CONSUMER.MSG.NEXT) delivers its events and, when its owner does not
# hold the pin at that moment, pins the puller: only the durable's own service may pull. Readers
# need `MSG.NEXT.<stream>.*` for their ordered consumers (server-chosen names), so the other
# services' durables (and the indexer's) are denied by name; `foreign_pulls ""` denies them all.
foreign_pulls() {
  local own=$1 d
  while read -r d; do
    [[ -n "$own" && "$d" == "$own"-p* ]] && continue
    echo "      \"\$JS.API.CONSUMER.MSG.NEXT.$STREAM.$d\""
  done < <(durables)
}

# Read-only access to a stream: info, direct and msg get, ephemeral consumers.
# `CONSUMER.CREATE.<stream>` (no name) is what async-nats and nats-py use for a new ordered
# consumer; `CONSUMER.CREATE.<stream>.<name>.<filter>` is what async-nats uses when it
# re-creates one after a reconnect or a missed heartbeat, so both are allowed. The durables of
# the services and the indexer are denied by name (protected_durables), so nobody but the
# gateway can redefine, e.g., the filter of accounts-p03.
reader() {
  local st=$1
  cat <<EOF
      "\$JS.API.STREAM.INFO.$st"
      "\$JS.API.STREAM.MSG.GET.$st"
      "\$JS.API.DIRECT.GET.$st"
      "\$JS.API.DIRECT.GET.$st.>"
      "\$JS.API.CONSUMER.CREATE.$st"
      "\$JS.API.CONSUMER.CREATE.$st.>"
      "\$JS.API.CONSUMER.INFO.$st.*"
      "\$JS.API.CONSUMER.MSG.NEXT.$st.*"
      "\$JS.API.CONSUMER.DELETE.$st.*"
      "\$JS.FC.$st.>"
EOF
}

gateway() {
  local st
  cat <<EOF
# The bus-gateway: the only writer of events and of the correlation index. It creates the
# streams, the membership bucket and the services' consumers (services ask it over
# sequent.provision.<service>), and answers appends in the queue group "$QUEUE".
PERMS_GATEWAY = {
  publish: {
    allow: [
      "ev.>"
      "ix.>"
      "\$JS.API.INFO"
EOF
  for st in "$STREAM" "$INDEX"; do
    cat <<EOF
      "\$JS.API.STREAM.CREATE.$st"
      "\$JS.API.STREAM.UPDATE.$st"
      "\$JS.API.STREAM.INFO.$st"
      "\$JS.API.STREAM.MSG.GET.$st"
      "\$JS.API.DIRECT.GET.$st"
      "\$JS.API.DIRECT.GET.$st.>"
      "\$JS.API.CONSUMER.CREATE.$st"
      "\$JS.API.CONSUMER.CREATE.$st.>"
      "\$JS.API.CONSUMER.DURABLE.CREATE.$st.*"
      "\$JS.API.CONSUMER.INFO.$st.*"
      "\$JS.API.CONSUMER.DELETE.$st.*"
      "\$JS.API.CONSUMER.MSG.NEXT.$st.*"
EOF
  done
  cat <<EOF
      "\$JS.API.STREAM.CREATE.KV_$BUCKET"
      "\$JS.API.STREAM.UPDATE.KV_$BUCKET"
      "\$JS.API.STREAM.INFO.KV_$BUCKET"
      "\$JS.ACK.>"
      "_INBOX.>"
    ]
  }
  subscribe: {
    # "subject queue": only as a member of the gateways' queue group, so that every append is
    # handled by exactly one gateway.
    allow: ["sequent.append.* $QUEUE", "sequent.provision.* $QUEUE", "sequent.tail.* $QUEUE", "sequent.pull.*.*.* $QUEUE", "_INBOX.>"]
  }
  allow_responses: true
}

EOF
}

analyst() {
  cat <<EOF
# Analysts (pyreport): read-only. Reads both streams through direct/msg get and ordered
# consumers; writes nothing and cannot touch the services' consumers.
PERMS_ANALYST = {
  publish: {
    allow: [
      "\$JS.API.INFO"
      "sequent.tail.analyst"
      "sequent.pull.analyst.>"
$(reader "$STREAM")
$(reader "$INDEX")
    ]
    deny: [
      "ev.>"
      "ix.>"
      "sequent.append.>"
      "sequent.provision.>"
      "sequent.live.>"
      "\$KV.>"
$(protected_durables)
$(foreign_pulls "")
    ]
  }
  subscribe: { allow: ["_INBOX.>", "_INBOX_analyst.>"] }
}

EOF
}

service() {
  local s=$1 upper p c
  upper=$(echo "$s" | tr '[:lower:]-' '[:upper:]_')
  cat <<EOF
# Service type "$s" (superclient). Appends only through the gateway, as "$s"; pulls from its
# pinned partition consumers $s-p00..; acks and unpins only those; replays the stream with
# ordered consumers (rebuild: server-chosen consumer names, hence MSG.NEXT.$STREAM.*, with the
# other services' durables denied by name); keeps its instances' heartbeats under $BUCKET.$s.*.
PERMS_SERVICE_$upper = {
  publish: {
    allow: [
      "sequent.append.$s"
      "sequent.provision.$s"
      "sequent.tail.$s"
      "sequent.pull.$s.>"
$(reader "$STREAM")
EOF
  for ((p = 0; p < PARTITIONS; p++)); do
    c=$(printf '%s-p%02d' "$s" "$p")
    echo "      \"\$JS.API.CONSUMER.UNPIN.$STREAM.$c\""
    # A new owner resets its consumer to the ack floor, so a dead owner's unacked event
    # comes back at once instead of after the ack wait.
    echo "      \"\$JS.API.CONSUMER.RESET.$STREAM.$c\""
    echo "      \"\$JS.ACK.$STREAM.$c.>\""
  done
  cat <<EOF
      "\$KV.$BUCKET.$s.>"
      "\$JS.API.STREAM.INFO.KV_$BUCKET"
      "\$JS.API.STREAM.MSG.GET.KV_$BUCKET"
      "\$JS.API.DIRECT.GET.KV_$BUCKET"
      "\$JS.API.DIRECT.GET.KV_$BUCKET.>"
      "\$JS.API.CONSUMER.CREATE.KV_$BUCKET"
      "\$JS.API.CONSUMER.CREATE.KV_$BUCKET.>"
      "\$JS.API.CONSUMER.INFO.KV_$BUCKET.*"
      "\$JS.API.CONSUMER.MSG.NEXT.KV_$BUCKET.*"
      "\$JS.API.CONSUMER.DELETE.KV_$BUCKET.*"
      "\$JS.FC.KV_$BUCKET.>"
      "sequent.live.$s.>"
      "_INBOX.>"
    ]
    deny: [
      "ev.>"
      "ix.>"
$(protected_durables)
$(foreign_pulls "$s")
    ]
  }
  subscribe: { allow: ["_INBOX.>", "_INBOX_$s.>", "sequent.live.$s.>"] }
}

EOF
}


header() {
  cat <<EOF
# GENERATED by nats/gen-users.sh: do not edit by hand; edit the script and re-run it.
#
EOF
}

generate() {
  header
  cat <<EOF
# Permission sets of the Sequent NATS users, included by accounts.conf (dev) and
# prod.conf.example. Subjects: ev.<key>.<type> (events, stored as ev.<p>.<key>.<type>),
# ix.c.<correlation> (index), sequent.append.<service> and sequent.provision.<service>
# (requests to the gateways). The admin user has no permission block: it may do everything.

EOF
  gateway
  analyst
  local s
  for s in "${SERVICES[@]}"; do service "$s"; done
}

generate_dev() {
  header
  cat <<EOF
# Permission sets of the service users that exist only in development (examples, tests);
# included by accounts.conf.

EOF
  local s
  for s in "${DEV_SERVICES[@]}"; do service "$s"; done
}

if [[ "${1:-}" == "--check" ]]; then
  status=0
  diff -u "$here/permissions.conf" <(generate) || status=1
  diff -u "$here/permissions-dev.conf" <(generate_dev) || status=1
  if ((status)); then echo "nats/permissions*.conf are stale: run nats/gen-users.sh" >&2; fi
  exit $status
fi
generate >"$here/permissions.conf"
generate_dev >"$here/permissions-dev.conf"
echo "wrote nats/permissions.conf and nats/permissions-dev.conf"
