select
    account_id,
    trim(name) as account_name,
    lower(plan) as plan,
    seats,
    mrr_usd,
    created_at
from {{ ref('raw_accounts') }}
