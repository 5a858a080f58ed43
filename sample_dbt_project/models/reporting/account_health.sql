-- Not synced (no meta.heap): a report built from two synced models, so that selecting
-- "@heap_accounts" or "heap_users+" walks through a model heap-dbt does not sync.
select
    a.account_id,
    a.plan,
    a.is_paying,
    count(u.email) as users,
    count(u.email) filter (where u.is_activated) as activated_users
from {{ ref('heap_accounts') }} as a
left join {{ ref('heap_users') }} as u on u.account_id = a.account_id
group by all
order by a.account_id
