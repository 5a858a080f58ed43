{# The integers 0 .. n-1 as a table t(i), in the target's SQL. #}
{% macro numbers(n) -%}
  {%- if target.type == 'postgres' -%}
    generate_series(0, {{ n }} - 1) as t(i)
  {%- else -%}
    range({{ n }}) t(i)
  {%- endif -%}
{%- endmacro %}
