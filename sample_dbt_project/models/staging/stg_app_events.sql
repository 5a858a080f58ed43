select
    event_id,
    user_id,
    event_type,
    occurred_at
from {{ ref('raw_app_events') }}
where occurred_at < cast('{{ var("heap_demo_as_of") }}' as timestamp)
