//! Checks the raw options against each other and against the function, and
//! builds the [`Spec`] that code generation reads. Nothing after this step looks
//! at raw attribute syntax.

use std::collections::HashSet;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

use crate::attr::{Given, RawArgs};
use crate::errors::Errors;

/// What `#[cached]` was asked to do, checked.
pub(crate) struct Spec {
    pub(crate) namespace: String,
    /// `None`: the runtime's default TTL.
    pub(crate) ttl_secs: Option<u64>,
    /// `none_ttl`: a cached `None`'s TTL (the value is an `Option`).
    pub(crate) none_ttl_secs: Option<u64>,
    /// `ttl_jitter`, in percent; `None`: the cache's.
    pub(crate) jitter: Option<u8>,
    /// `lease = false` turns the cache's leases off for this function.
    pub(crate) lease: bool,
    /// `stale_if_error`: how long past its TTL an entry is kept, to be
    /// returned when the body returns `Err`.
    pub(crate) grace_secs: Option<u64>,
    pub(crate) version: u32,
    pub(crate) krate: syn::Path,
    pub(crate) key_self: bool,
    /// `key_self_type` was given: `Self` goes among the call's types although
    /// there is no receiver. Its span, where an error about `Self` points.
    pub(crate) key_self_type: Option<Span>,
    pub(crate) receiver: bool,
    /// The receiver (`&self`), where errors about `self` in the key point.
    pub(crate) receiver_span: Span,
    pub(crate) key_args: Vec<KeyArg>,
    pub(crate) skipped: Vec<Ident>,
    pub(crate) shape: Shape,
    /// The cached value's type.
    pub(crate) value_ty: Type,
    /// The function's type parameters: their concrete types go among the
    /// call's types.
    pub(crate) type_params: Vec<Ident>,
    /// The function's const parameters: their values go into the key.
    pub(crate) const_params: Vec<Ident>,
}

/// An argument that is part of the key.
pub(crate) struct KeyArg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// Its type is a reference (`&T`), so the binding is already borrowed.
    pub(crate) by_ref: bool,
}

/// Which results are cached.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `Result<T, E>`: `Ok` only.
    Result,
    /// `Option<T>`: `Some` only.
    Option,
    /// Anything else, and `Option<T>` under `cache_none`: every value.
    Value,
}

impl Spec {
    pub(crate) fn new(raw: &RawArgs, item: &ItemFn, errors: &mut Errors) -> Option<Spec> {
        let sig = &item.sig;
        if let Some(constness) = &sig.constness {
            errors.push(syn::Error::new(
                constness.span(),
                "#[cached] cannot be used on a `const fn`: cached results live in a runtime cache; remove `const`",
            ));
        }
        // A `const fn` is never async either; one error says it all.
        if sig.asyncness.is_none() && sig.constness.is_none() {
            errors.push(syn::Error::new(
                sig.fn_token.span(),
                "#[cached] only supports `async fn`: make the function async (`async fn`), \
                 it is called with `.await` and may then use a remote cache",
            ));
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(syn::Error::new(
                variadic.span(),
                "#[cached] does not support variadic functions",
            ));
        }

        let namespace = namespace(raw.namespace.as_ref(), &sig.ident, errors);
        let ttl_secs = raw.ttl.as_ref().and_then(|t| ttl(t, "ttl", errors));
        let none_ttl_secs = raw
            .none_ttl
            .as_ref()
            .and_then(|t| ttl(t, "none_ttl", errors));
        let jitter = raw.ttl_jitter.as_ref().map(|j| jitter(j, errors));
        let grace_secs = raw
            .stale_if_error
            .as_ref()
            .and_then(|t| ttl(t, "stale_if_error", errors));
        let version = raw.version.as_ref().map_or(Some(0), |v| {
            v.value
                .base10_parse::<u32>()
                .map_err(|_| {
                    errors.push(syn::Error::new(
                        v.value.span(),
                        "`version` must be an integer from 0 to 4294967295",
                    ))
                })
                .ok()
        });
        let krate = match &raw.krate {
            None => Some(syn::parse_quote!(::cache_runtime)),
            Some(k) => k
                .value
                .parse::<syn::Path>()
                .map_err(|_| {
                    errors.push(syn::Error::new(
                        k.value.span(),
                        "`crate` must be a path to the runtime crate, as in `crate = \"my_cache\"` or `crate = \"::deps::cache_runtime\"`",
                    ))
                })
                .ok(),
        };
        // `none_ttl` caches `None`, with its own TTL.
        let cache_none = raw.cache_none.as_ref().is_some_and(|b| b.value.value)
            || (raw.none_ttl.is_some() && returns_option(&sig.output));
        if let (Some(none_ttl), Some(cache_none)) = (&raw.none_ttl, &raw.cache_none)
            && !cache_none.value.value
        {
            errors.push(syn::Error::new(
                none_ttl.span,
                "`none_ttl` caches `None`, which `cache_none = false` says not to; remove one of them",
            ));
        }
        let key_self = raw.key_self.as_ref().is_some_and(|b| b.value.value);
        let key_self_type = raw
            .key_self_type
            .as_ref()
            .filter(|b| b.value.value)
            .map(|b| b.span);
        let receiver = sig.receiver().is_some();
        if let (Some(span), true) = (key_self_type, receiver) {
            errors.push(syn::Error::new(
                span,
                "`key_self_type` is implied for methods with a `self` receiver: the type of \
                 `Self` is always in their key; remove it",
            ));
        }
        let receiver_span = sig.receiver().map_or_else(Span::call_site, Spanned::span);
        if key_self && !receiver {
            errors.push(syn::Error::new(
                raw.key_self.as_ref().map_or(Span::call_site(), |k| k.span),
                "`key_self` needs a method with a `self` receiver; remove it",
            ));
        }

        let (key_args, skipped) = arguments(sig, raw.skip.as_ref(), errors);
        let shape_and_value = shape(&sig.output, cache_none, sig.span(), errors);
        if let (Some(given), Some((Shape::Result, _) | (Shape::Value, _))) =
            (raw.cache_none.as_ref(), shape_and_value.as_ref())
            && !returns_option(&sig.output)
        {
            errors.push(syn::Error::new(
                given.span,
                "`cache_none` only applies to functions returning `Option<T>`; remove it",
            ));
        }
        if let (Some(given), Some((_, value_ty))) = (&raw.none_ttl, shape_and_value.as_ref())
            && !is_option(value_ty)
        {
            errors.push(syn::Error::new(
                given.span,
                "`none_ttl` applies to functions returning `Option<T>` or `Result<Option<T>, E>`, \
                 whose `None` it caches; remove it",
            ));
        }
        if let (Some(given), Some((Shape::Option | Shape::Value, _))) =
            (&raw.stale_if_error, shape_and_value.as_ref())
        {
            errors.push(syn::Error::new(
                given.span,
                "`stale_if_error` returns the last good value when the function returns `Err`; \
                 it applies to functions returning `Result<T, E>`; remove it",
            ));
        }
        let (shape, value_ty) = shape_and_value?;
        let type_params = sig
            .generics
            .type_params()
            .map(|p| p.ident.clone())
            .collect();
        let const_params = sig
            .generics
            .const_params()
            .map(|p| p.ident.clone())
            .collect();

        Some(Spec {
            namespace: namespace?,
            ttl_secs: ttl_secs.unwrap_or(None),
            none_ttl_secs: none_ttl_secs.unwrap_or(None),
            jitter: jitter.unwrap_or(None),
            lease: raw.lease.as_ref().is_none_or(|l| l.value.value),
            grace_secs: grace_secs.unwrap_or(None),
            version: version?,
            krate: krate?,
            key_self,
            key_self_type,
            receiver,
            receiver_span,
            key_args,
            skipped,
            shape,
            value_ty,
            type_params,
            const_params,
        })
        .filter(|_| errors.is_empty())
    }
}

fn namespace(
    given: Option<&Given<syn::LitStr>>,
    function: &Ident,
    errors: &mut Errors,
) -> Option<String> {
    let Some(given) = given else {
        return Some(function.to_string().trim_start_matches("r#").to_owned());
    };
    let name = given.value.value();
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 64 {
        Some("is longer than 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some(
            "may only contain ASCII letters, digits, `_`, `.` and `-` (`:` and braces are reserved by the key layout)",
        )
    } else {
        None
    };
    match problem {
        None => Some(name),
        Some(problem) => {
            errors.push(syn::Error::new(
                given.value.span(),
                format!(
                    "invalid namespace {:?}: it {problem}; for example `namespace = \"users\"`",
                    name
                ),
            ));
            None
        }
    }
}

/// `Some(None)`: no TTL given. `None`: an error was reported. `option` is
/// the option's name (`ttl`, `none_ttl`), for the messages.
fn ttl(given: &Given<syn::Lit>, option: &str, errors: &mut Errors) -> Option<Option<u64>> {
    let noun = if option == "stale_if_error" {
        "grace period"
    } else {
        "TTL"
    };
    let (secs, span) = match &given.value {
        syn::Lit::Int(i) => match i.base10_parse::<u64>() {
            Ok(secs) => (secs, i.span()),
            Err(_) => {
                errors.push(syn::Error::new(
                    i.span(),
                    format!("the {noun} must be a whole number of seconds, as in `{option} = 60`"),
                ));
                return None;
            }
        },
        syn::Lit::Str(s) => match humantime::parse_duration(&s.value()) {
            Ok(d) if d.subsec_nanos() != 0 => {
                errors.push(syn::Error::new(s.span(), format!("the {noun} must be a whole number of seconds; entries expire with second precision")));
                return None;
            }
            Ok(d) => (d.as_secs(), s.span()),
            Err(e) => {
                errors.push(syn::Error::new(
                    s.span(),
                    format!("cannot read {:?} as a {noun} ({e}); write it like \"90s\", \"10m\", \"1h30m\" or \"2days\"", s.value()),
                ));
                return None;
            }
        },
        _ => unreachable!("attr::ttl only accepts integer and string literals"),
    };
    if secs == 0 {
        let fix = match option {
            "ttl" => "to disable caching, remove #[cached]",
            "none_ttl" => "to leave `None` uncached, remove `none_ttl`",
            _ => "to return errors as they are, remove `stale_if_error`",
        };
        errors.push(syn::Error::new(
            span,
            format!("the {noun} must be at least one second; {fix}"),
        ));
        return None;
    }
    // The runtime's `MAX_TTL`: every backend can store it.
    const MAX_TTL_SECS: u64 = 365 * 24 * 60 * 60;
    if secs > MAX_TTL_SECS {
        errors.push(syn::Error::new(
            span,
            format!("the {noun} is too long: at most 365 days ({MAX_TTL_SECS} seconds, `{option} = \"365days\"`)"),
        ));
        return None;
    }
    Some(Some(secs))
}

/// `ttl_jitter = "20%"`: the percentage, 0 to 50 (the runtime's
/// `MAX_TTL_JITTER`). `None`: an error was reported.
fn jitter(given: &Given<syn::LitStr>, errors: &mut Errors) -> Option<u8> {
    const MAX: u8 = 50;
    let text = given.value.value();
    let percent = text
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<u8>().ok());
    match percent {
        Some(p) if p <= MAX => Some(p),
        Some(p) => {
            errors.push(syn::Error::new(
                given.value.span(),
                format!("the TTL jitter is at most {MAX}%, not {p}%: past half, a TTL says little"),
            ));
            None
        }
        None => {
            errors.push(syn::Error::new(
                given.value.span(),
                format!(
                    "cannot read {text:?} as a jitter: write a percentage, as in \
                     `ttl_jitter = \"20%\"` (`\"0%\"` turns it off)"
                ),
            ));
            None
        }
    }
}

fn arguments(
    sig: &syn::Signature,
    skip: Option<&Given<Vec<Ident>>>,
    errors: &mut Errors,
) -> (Vec<KeyArg>, Vec<Ident>) {
    let skip_names = skip.map(|s| s.value.as_slice()).unwrap_or_default();
    let mut seen = HashSet::new();
    for name in skip_names {
        if !seen.insert(name.to_string()) {
            errors.push(syn::Error::new(
                name.span(),
                format!("`{name}` is listed twice in `skip`"),
            ));
        }
    }

    let mut named = Vec::new();
    let mut key_args = Vec::new();
    let mut skipped = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(arg) = arg else { continue };
        let ident = match &*arg.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            // An unnamed argument cannot change what the body computes.
            Pat::Wild(_) => continue,
            other => {
                errors.push(syn::Error::new(
                    other.span(),
                    "#[cached] needs each argument bound to a name, to put it in the key: \
                     write `point: Point` and destructure it in the body",
                ));
                continue;
            }
        };
        named.push(ident.to_string());
        if skip_names.contains(&ident) {
            skipped.push(ident);
            continue;
        }
        key_args.push(KeyArg {
            by_ref: matches!(&*arg.ty, Type::Reference(_)),
            ident,
            ty: (*arg.ty).clone(),
        });
    }

    for name in skip_names {
        if name == "_" {
            errors.push(syn::Error::new(
                name.span(),
                "arguments named `_` are never part of the key; remove `_` from `skip`",
            ));
        } else if name == "self" {
            errors.push(syn::Error::new(
                name.span(),
                "`self` is never part of the key, so it cannot be skipped; remove it from `skip` \
                 (to put it in the key, use `key_self = true`)",
            ));
        } else if !named.iter().any(|n| name == n) {
            let known = if named.is_empty() {
                "the function has no named arguments".to_owned()
            } else {
                format!("its arguments are: {}", named.join(", "))
            };
            errors.push(syn::Error::new(
                name.span(),
                format!("`skip({name})`: the function has no argument `{name}`; {known}"),
            ));
        }
    }
    (key_args, skipped)
}

fn shape(
    output: &ReturnType,
    cache_none: bool,
    sig_span: Span,
    errors: &mut Errors,
) -> Option<(Shape, Type)> {
    let ReturnType::Type(_, ty) = output else {
        errors.push(syn::Error::new(
            sig_span,
            "a #[cached] function must return the value to cache; add a return type (`-> User`)",
        ));
        return None;
    };
    // The wrapper names the return type; `impl Trait` cannot be named, even in
    // the part that is not cached (`Result<T, impl Error>`).
    if let Some((span, _)) = unsupported_in_value(ty).filter(|(_, r)| r.contains("impl Trait")) {
        errors.push(syn::Error::new(
            span,
            "#[cached] must name the function's return type, and `impl Trait` cannot be named: \
             write the concrete type (`Result<u64, ParseIntError>`)",
        ));
        return None;
    }
    let last = match &**ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    };
    let first_type_arg = |seg: &syn::PathSegment| match &seg.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|a| match a {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    let shape = match last {
        Some(seg) if seg.ident == "Result" => first_type_arg(seg).map(|t| (Shape::Result, t)),
        Some(seg) if seg.ident == "Option" && !cache_none => {
            first_type_arg(seg).map(|t| (Shape::Option, t))
        }
        _ => None,
    };
    let (shape, value) = shape.unwrap_or_else(|| (Shape::Value, (**ty).clone()));
    if let Some(span) = unsupported_in_value(&value) {
        errors.push(syn::Error::new(span.0, span.1));
        return None;
    }
    Some((shape, value))
}

fn returns_option(output: &ReturnType) -> bool {
    matches!(output, ReturnType::Type(_, ty) if is_option(ty))
}

/// Whether a type is written `Option<..>` (as far as syntax tells).
fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

/// A part of the return type that cannot be stored, with the reason.
fn unsupported_in_value(ty: &Type) -> Option<(Span, &'static str)> {
    struct Finder(Option<(Span, &'static str)>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
            self.0.get_or_insert((
                t.span(),
                "#[cached] cannot store an `impl Trait` return value: return a named type that implements Serialize and Deserialize",
            ));
        }
        fn visit_type_reference(&mut self, t: &'ast syn::TypeReference) {
            self.0.get_or_insert((
                t.span(),
                "#[cached] cannot store a borrowed return value: return an owned type (`String` rather than `&str`, `Vec<T>` rather than `&[T]`)",
            ));
        }
    }
    let mut finder = Finder(None);
    finder.visit_type(ty);
    finder.0
}
