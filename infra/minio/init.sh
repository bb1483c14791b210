#!/bin/sh
# One-shot (minio-init service, minio/mc image): the private bucket of foleyflow's artifact
# store and the access key foleyflow uses for it. Idempotent; re-running it applies a changed
# STORE_SECRET_KEY.
#
#   bucket  foley: private (no anonymous access), versioned (an overwritten or deleted object
#           keeps its previous version; see infra/README.md, "Backups")
#   key     STORE_ACCESS_KEY / STORE_SECRET_KEY with policy foleyflow-store: read, write and
#           list the bucket, nothing else (no delete, no other bucket, no admin). Workers and
#           the review app use this key, never MinIO's root account.
#
# Secrets come from the environment. The root account reaches mc through MC_HOST_<alias>, so it
# is neither on a command line nor in an mc config file (keep it URL-safe: hex).
set -eu
BUCKET=foley
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${STORE_ACCESS_KEY:?}" "${STORE_SECRET_KEY:?}"
export MC_HOST_studio="http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@minio:9000"

mc mb --ignore-existing "studio/${BUCKET}"
mc anonymous set none "studio/${BUCKET}"
mc version enable "studio/${BUCKET}"

mc admin policy create studio foleyflow-store /foleyflow/foleyflow-policy.json
mc admin user add studio "${STORE_ACCESS_KEY}" "${STORE_SECRET_KEY}"
mc admin policy attach studio foleyflow-store --user "${STORE_ACCESS_KEY}" \
  || mc admin user info studio "${STORE_ACCESS_KEY}" | grep -q foleyflow-store
echo "foleyflow: bucket ${BUCKET} (private, versioned) and its access key are ready"
