//! Parses the attribute's options into [`RawArgs`]: each option as written,
//! with its span, unchecked. Rules between options and against the function are
//! checked later, in `spec`.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, Lit, LitBool, LitInt, LitStr, Token};

use crate::errors::Errors;

/// Every option, in the order the docs list them.
pub(crate) const OPTIONS: &[&str] = &[
    "namespace",
    "ttl",
    "none_ttl",
    "ttl_jitter",
    "stale_if_error",
    "lease",
    "skip",
    "version",
    "cache_none",
    "key_self",
    "key_self_type",
    "crate",
];

/// One option's value as written, with the span of the whole option.
pub(crate) struct Given<T> {
    pub(crate) span: Span,
    pub(crate) value: T,
}

/// The options as written.
#[derive(Default)]
pub(crate) struct RawArgs {
    pub(crate) namespace: Option<Given<LitStr>>,
    pub(crate) ttl: Option<Given<Lit>>,
    pub(crate) none_ttl: Option<Given<Lit>>,
    pub(crate) ttl_jitter: Option<Given<LitStr>>,
    pub(crate) lease: Option<Given<LitBool>>,
    pub(crate) stale_if_error: Option<Given<Lit>>,
    pub(crate) skip: Option<Given<Vec<Ident>>>,
    pub(crate) version: Option<Given<LitInt>>,
    pub(crate) cache_none: Option<Given<LitBool>>,
    pub(crate) key_self: Option<Given<LitBool>>,
    pub(crate) key_self_type: Option<Given<LitBool>>,
    pub(crate) krate: Option<Given<LitStr>>,
}

impl RawArgs {
    /// Parses the attribute's arguments. Problems with single options are
    /// recorded in `errors` and parsing goes on, so all of them are reported at
    /// once; only malformed syntax stops it.
    pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> RawArgs {
        let mut raw = RawArgs::default();
        let parser = syn::meta::parser(|meta| raw.option(meta, errors));
        if let Err(e) = parser.parse2(args) {
            errors.push(e);
        }
        raw
    }

    fn option(&mut self, meta: ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<()> {
        let name = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let span = span_of(&meta);
        match name.as_str() {
            "namespace" => set(
                &mut self.namespace,
                span,
                "namespace",
                lit_str(&meta, "namespace = \"users\"")?,
                errors,
            ),
            "ttl" => set(&mut self.ttl, span, "ttl", ttl(&meta, "ttl")?, errors),
            "none_ttl" => set(
                &mut self.none_ttl,
                span,
                "none_ttl",
                ttl(&meta, "none_ttl")?,
                errors,
            ),
            "ttl_jitter" => set(
                &mut self.ttl_jitter,
                span,
                "ttl_jitter",
                lit_str(&meta, "ttl_jitter = \"20%\"")?,
                errors,
            ),
            "stale_if_error" => set(
                &mut self.stale_if_error,
                span,
                "stale_if_error",
                ttl(&meta, "stale_if_error")?,
                errors,
            ),
            "lease" => set(
                &mut self.lease,
                span,
                "lease",
                flag(&meta, "lease")?,
                errors,
            ),
            "skip" => set(&mut self.skip, span, "skip", skip(&meta)?, errors),
            "version" => set(&mut self.version, span, "version", version(&meta)?, errors),
            "cache_none" => set(
                &mut self.cache_none,
                span,
                "cache_none",
                flag(&meta, "cache_none")?,
                errors,
            ),
            "key_self" => set(
                &mut self.key_self,
                span,
                "key_self",
                flag(&meta, "key_self")?,
                errors,
            ),
            "key_self_type" => set(
                &mut self.key_self_type,
                span,
                "key_self_type",
                flag(&meta, "key_self_type")?,
                errors,
            ),
            "crate" => set(
                &mut self.krate,
                span,
                "crate",
                lit_str(&meta, "crate = \"my_cache_runtime\"")?,
                errors,
            ),
            _ => {
                skip_value(&meta)?;
                let hint = suggestion(&name)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                errors.push(syn::Error::new_spanned(
                    &meta.path,
                    format!(
                        "unknown option `{}` for #[cached]{hint}\nvalid options are: {}",
                        path_text(&meta.path),
                        OPTIONS.join(", ")
                    ),
                ));
                Ok(())
            }
        }
    }
}

/// Records an option, reporting a duplicate. The one place duplicates are
/// checked, so no option can forget to.
fn set<T>(
    slot: &mut Option<Given<T>>,
    span: Span,
    name: &str,
    value: Option<T>,
    errors: &mut Errors,
) -> syn::Result<()> {
    let Some(value) = value else { return Ok(()) };
    if slot.is_some() {
        errors.push(syn::Error::new(
            span,
            format!("duplicate option `{name}`: give it once"),
        ));
    } else {
        *slot = Some(Given { span, value });
    }
    Ok(())
}

/// The span from the option's name to the end of its value, as far as the
/// compiler lets us join spans; the name's span otherwise.
fn span_of(meta: &ParseNestedMeta<'_>) -> Span {
    let start = syn::spanned::Spanned::span(&meta.path);
    start.join(meta.input.span()).unwrap_or(start)
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// `name = "string"`. Other literals are reported with the expected form.
fn lit_str(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<Option<LitStr>> {
    let lit = value_lit(meta, example)?;
    match lit {
        Some(Lit::Str(s)) => Ok(Some(s)),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("expected a string literal, as in `{example}`"),
        )),
        None => Ok(None),
    }
}

/// The literal after `=`, or an error that shows the expected form.
fn value_lit(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<Option<Lit>> {
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("expected a value, as in `{example}`")));
    }
    let expr: syn::Expr = meta.value()?.parse()?;
    match expr {
        syn::Expr::Lit(lit) if lit.attrs.is_empty() => Ok(Some(lit.lit)),
        syn::Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => Err(syn::Error::new_spanned(
            expr,
            format!("negative values are not allowed, as in `{example}`"),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a literal, as in `{example}`; attribute options cannot be computed"),
        )),
    }
}

/// `ttl = 60` or `ttl = "10m"` (`option` is `ttl` or `none_ttl`).
fn ttl(meta: &ParseNestedMeta<'_>, option: &str) -> syn::Result<Option<Lit>> {
    let example = format!("{option} = 60` or `{option} = \"10m\"");
    match value_lit(meta, &example)? {
        Some(lit @ (Lit::Int(_) | Lit::Str(_))) => Ok(Some(lit)),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!(
                "expected the TTL in seconds (`{option} = 60`) or as a duration string (`{option} = \"1h30m\"`)"
            ),
        )),
        None => Ok(None),
    }
}

/// `version = 2`.
fn version(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitInt>> {
    match value_lit(meta, "version = 2")? {
        Some(Lit::Int(i)) => Ok(Some(i)),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            "expected an integer version, as in `version = 2`",
        )),
        None => Ok(None),
    }
}

/// `flag` alone means `flag = true`.
fn flag(meta: &ParseNestedMeta<'_>, name: &str) -> syn::Result<Option<LitBool>> {
    if meta.input.is_empty() || meta.input.peek(Token![,]) {
        return Ok(Some(LitBool::new(
            true,
            syn::spanned::Spanned::span(&meta.path),
        )));
    }
    match value_lit(meta, &format!("{name} = true"))? {
        Some(Lit::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("expected `true` or `false`, as in `{name} = true`"),
        )),
        None => Ok(None),
    }
}

/// `skip(a, b)`.
fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<Vec<Ident>>> {
    if meta.input.peek(Token![=]) {
        return Err(meta.error(
            "write the arguments to leave out of the key in parentheses: `skip(pool, logger)`",
        ));
    }
    if !meta.input.peek(syn::token::Paren) {
        return Err(meta.error("name the arguments to leave out of the key: `skip(pool, logger)`"));
    }
    let content;
    syn::parenthesized!(content in meta.input);
    let names = content.call(|input: ParseStream<'_>| {
        Punctuated::<Ident, Token![,]>::parse_terminated_with(input, syn::ext::IdentExt::parse_any)
    })?;
    Ok(Some(names.into_iter().collect()))
}

/// Consumes the value of an unknown option so parsing can go on.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

/// The valid option closest to a misspelled one, if any is close.
fn suggestion(unknown: &str) -> Option<&'static str> {
    let aliases: &[(&str, &str)] = &[
        ("ns", "namespace"),
        ("name", "namespace"),
        ("ttl_secs", "ttl"),
        ("time", "ttl"),
        ("expire", "ttl"),
        ("negative_ttl", "none_ttl"),
        ("ttl_none", "none_ttl"),
        ("jitter", "ttl_jitter"),
        ("result_fallback", "stale_if_error"),
        ("fallback", "stale_if_error"),
        ("stale", "stale_if_error"),
        ("single_flight", "lease"),
        ("sync_writes", "lease"),
        ("lock", "lease"),
        ("ignore", "skip"),
        ("exclude", "skip"),
        ("convert", "skip"),
        ("option", "cache_none"),
        ("result", "cache_none"),
    ];
    if let Some((_, s)) = aliases.iter().find(|(a, _)| *a == unknown) {
        return Some(s);
    }
    OPTIONS
        .iter()
        .map(|o| (edit_distance(unknown, o), *o))
        .filter(|(d, o)| *d <= 2 && *d < o.len())
        .min()
        .map(|(_, o)| o)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_options() {
        assert_eq!(suggestion("namespac"), Some("namespace"));
        assert_eq!(suggestion("ttl_secs"), Some("ttl"));
        assert_eq!(suggestion("versions"), Some("version"));
        assert_eq!(suggestion("zzzzzz"), None);
    }
}
