-- One row per user, keyed by email (Heap's identity).
with as_of as (
    select cast('{{ var("heap_demo_as_of") }}' as timestamp) as as_of_ts
),

activity as (
    select
        e.user_id,
        count(*) filter (where e.occurred_at >= a.as_of_ts - interval '7 day') as events_last_7_days,
        count(*) filter (where e.occurred_at >= a.as_of_ts - interval '30 day') as events_last_30_days,
        max(e.occurred_at) as last_seen_at
    from {{ ref('stg_app_events') }} as e
    cross join as_of as a
    group by e.user_id
),

revenue as (
    select user_id, sum(amount_usd) as lifetime_value
    from {{ ref('stg_orders') }}
    group by user_id
)

select
    u.email,
    u.user_id,
    u.account_id,
    u.plan,
    cast(coalesce(r.lifetime_value, 0) as decimal(12, 2)) as lifetime_value,
    cast(u.trial_ends_at as date) as trial_end_date,
    cast(u.activated_at as date) as activation_date,
    cast(coalesce(a.events_last_7_days, 0) as integer) as events_last_7_days,
    cast(coalesce(a.events_last_30_days, 0) as integer) as events_last_30_days,
    u.activated_at is not null as is_activated,
    a.last_seen_at,
    case
        when u.activated_at is null then null
        when u.plan = 'enterprise' then {{ string_list(['beta', 'dark_mode', 'sso']) }}
        when u.plan = 'pro' then {{ string_list(['beta', 'dark_mode']) }}
        when coalesce(a.events_last_30_days, 0) > 0 then {{ string_list(['dark_mode']) }}
        else {{ string_list([]) }}
    end as feature_flags
from {{ ref('stg_users') }} as u
left join activity as a on a.user_id = u.user_id
left join revenue as r on r.user_id = u.user_id
order by u.user_id
