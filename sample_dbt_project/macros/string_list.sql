{# A list of strings in the target's SQL: DuckDB's [..] literal, Postgres' array[..]. #}
{% macro string_list(items) -%}
  {%- set quoted = [] -%}
  {%- for item in items -%}{%- do quoted.append("'" ~ item ~ "'") -%}{%- endfor -%}
  {%- if target.type == 'postgres' -%}
    cast(array[{{ quoted | join(', ') }}] as varchar[])
  {%- else -%}
    cast([{{ quoted | join(', ') }}] as varchar[])
  {%- endif -%}
{%- endmacro %}
