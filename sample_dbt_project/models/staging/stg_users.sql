select
    user_id,
    lower(trim(email)) as email,
    account_id,
    lower(plan) as plan,
    signed_up_at,
    trial_ends_at,
    activated_at
from {{ ref('raw_users') }}
