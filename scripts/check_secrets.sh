#!/usr/bin/env bash
# Refuses to let the stack start with a known or weak secret. docker-compose.yml runs it first
# (service check-secrets; postgres and everything else wait for it to succeed), because
# `${VAR:?}` cannot tell a placeholder such as CHANGE-ME from a real value.
#
#   bash scripts/check_secrets.sh        # reads the variables from the environment
#
# Exits 1 naming every variable that is empty, a placeholder, a well-known default, shorter
# than 16 characters (the JWT secret: 64 bytes), or (for passwords that go into URLs) not URL-safe; 0 when all are fine.
set -uo pipefail
failed=0
refuse() {
    echo "refusing to start: $*" >&2
    failed=1
}
secrets=(POSTGRES_PASSWORD JOB_MANAGER_DB_PASSWORD AIRFLOW__CORE__FERNET_KEY
    AIRFLOW__API_AUTH__JWT_SECRET _AIRFLOW_WWW_USER_PASSWORD)
for name in "${secrets[@]}"; do
    value=${!name-}
    lower=${value,,}
    case $lower in
        "" | *change-me* | *changeme* | *change_me* | airflow | postgres | admin | password* | secret*)
            refuse "$name is empty or a placeholder: generate one (see .env.example)"
            continue
            ;;
    esac
    if ((${#value} < 16)); then
        refuse "$name is shorter than 16 characters: generate one (see .env.example)"
    fi
done
# These go into connection URLs: only characters that need no escaping.
for name in POSTGRES_PASSWORD JOB_MANAGER_DB_PASSWORD; do
    if [[ ! ${!name-} =~ ^[A-Za-z0-9_-]*$ ]]; then
        refuse "$name may use only A-Z a-z 0-9 _ - (it goes into URLs); use secrets.token_urlsafe"
    fi
done
if [[ -n ${POSTGRES_PASSWORD-} && ${POSTGRES_PASSWORD-} == "${JOB_MANAGER_DB_PASSWORD-}" ]]; then
    refuse "JOB_MANAGER_DB_PASSWORD must differ from POSTGRES_PASSWORD (the superuser's)"
fi
# Airflow signs its JWTs with HMAC-SHA512 and warns about a key shorter than 64 bytes.
jwt=${AIRFLOW__API_AUTH__JWT_SECRET-}
if [[ -n $jwt ]] && (($(printf %s "$jwt" | wc -c) < 64)); then
    refuse "AIRFLOW__API_AUTH__JWT_SECRET is shorter than 64 bytes (HMAC-SHA512 wants 64): use secrets.token_urlsafe(64)"
fi
if [[ ! ${AIRFLOW__CORE__FERNET_KEY-} =~ ^[A-Za-z0-9_-]{43}=$ ]]; then
    refuse "AIRFLOW__CORE__FERNET_KEY is not a Fernet key (44 characters of URL-safe base64)"
fi
uid=${AIRFLOW_UID-}
if [[ ! $uid =~ ^[0-9]+$ || $uid == 0 ]]; then
    refuse "AIRFLOW_UID must be your user id (id -u), not root, got '${uid}'"
fi
if ((failed)); then
    echo "edit .env (see .env.example for how to generate each value), then start again" >&2
    exit 1
fi
echo "secrets: ok" >&2
