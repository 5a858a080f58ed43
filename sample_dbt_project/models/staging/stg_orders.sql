select
    order_id,
    'ord_' || lpad(cast(order_id as varchar), 4, '0') as purchase_id,
    user_id,
    ordered_at,
    amount_usd,
    product,
    quantity,
    nullif(trim(coupon), '') as coupon
from {{ ref('raw_orders') }}
