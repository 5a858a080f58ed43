-- One row per account, keyed by account_id.
select
    a.account_id,
    a.account_name,
    a.plan,
    a.seats,
    a.mrr_usd,
    cast(count(u.user_id) as integer) as user_count,
    a.mrr_usd > 0 as is_paying,
    a.created_at
from {{ ref('stg_accounts') }} as a
left join {{ ref('stg_users') }} as u on u.account_id = a.account_id
group by a.account_id, a.account_name, a.plan, a.seats, a.mrr_usd, a.created_at
order by a.account_id
