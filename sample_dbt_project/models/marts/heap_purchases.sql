-- One row per order: sent to Heap as a "Purchase" event by the buyer's email.
select
    o.purchase_id,
    u.email as user_email,
    o.ordered_at as purchased_at,
    o.amount_usd,
    o.product,
    o.quantity,
    o.coupon
from {{ ref('stg_orders') }} as o
inner join {{ ref('stg_users') }} as u on u.user_id = o.user_id
order by o.purchase_id
