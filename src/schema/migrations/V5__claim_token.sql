-- V5: a token per claim, so a claim whose reply was lost can be recognised.
--
-- get_and_lock_job writes a random token (chosen by the caller) into the row it claims. When
-- the connection breaks after the claim was sent, the caller looks for its token on another
-- connection and receives the job it claimed, instead of claiming a second one and leaving the
-- first in 'processing' with no owner. A nullable column without a default: no rewrite.

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS claim_token text;
