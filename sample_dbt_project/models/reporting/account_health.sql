-- Not synced (no meta.heap): a report built from two synced models, so that selecting
-- "@heap_accounts" or "heap_users+" walks through a model heap-dbt does not sync.
select
    a.account_id,
    a.plan,
    a.is_paying,
    count(u.email) as users,
    sum(case when u.is_activated then 1 else 0 end) as activated_users
from {{ ref('heap_accounts') }} as a
left join {{ ref('heap_users') }} as u on u.account_id = a.account_id
group by a.account_id, a.plan, a.is_paying
