//! Generates the wrapper and its companions from a [`Spec`].
//!
//! The wrapper keeps the user's signature, attributes and body. The body moves
//! into an `async move` block that the runtime runs only on a miss; the key
//! arguments are encoded before it, while they are still borrowed. Everything
//! generated refers to the runtime by absolute path and names its locals
//! `__cache_*`, so nothing collides with user code.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use crate::attr::RawArgs;
use crate::spec::{KeyArg, Shape, Spec};

pub(crate) fn expand(spec: &Spec, item: &ItemFn) -> TokenStream {
    let names = Names::new(&item.sig.ident, spec.receiver);
    let wrapper = wrapper(spec, item, &names);
    let invalidate = invalidate_companion(spec, item, &names);
    let namespace_const = namespace_companion(spec, item, &names);
    quote! {
        #wrapper
        #invalidate
        #namespace_const
    }
}

/// The companions' names, and how docs link to them.
struct Names {
    function: String,
    invalidate: Ident,
    namespace: Ident,
    /// `Self::` inside impl blocks, nothing for free functions.
    link_prefix: &'static str,
}

impl Names {
    fn new(function: &Ident, receiver: bool) -> Names {
        let function = function.to_string().trim_start_matches("r#").to_owned();
        Names {
            invalidate: format_ident!("{}_invalidate", function),
            namespace: format_ident!("{}_NAMESPACE", function.to_uppercase()),
            function,
            link_prefix: if receiver { "Self::" } else { "" },
        }
    }
}

fn call_site(spec: &Spec, function: &str, companion: bool) -> TokenStream {
    let krate = &spec.krate;
    let namespace = &spec.namespace;
    let version = spec.version;
    let ttl = spec.ttl_secs.unwrap_or(0);
    let none_ttl = spec.none_ttl_secs.unwrap_or(0);
    // `u8::MAX`: the cache's jitter (`cache_runtime::call::CACHE_JITTER`).
    let jitter = spec.jitter.unwrap_or(u8::MAX);
    let lease = spec.lease;
    let grace = spec.grace_secs.unwrap_or(0);
    let self_type = spec.receiver || spec.key_self_type.is_some();
    let exact_types = exact_types(spec);
    quote! {
        // Its path, as `type_name` writes it, locates the function: module,
        // `impl` block and enclosing scopes included.
        fn __cache_marker() {}
        static __CACHE_SITE: #krate::__private::CallSite = #krate::__private::CallSite::new(
            #namespace,
            #function,
            || ::core::any::type_name_of_val(&__cache_marker),
            #version,
            #ttl,
            #none_ttl,
            #jitter,
            #grace,
            #lease,
            #companion,
            #self_type,
            #exact_types,
        );
    }
}

/// How many of the call's types are counted exactly (`Self`, the type
/// parameters, the value), before the key arguments'.
fn exact_types(spec: &Spec) -> usize {
    usize::from(spec.receiver || spec.key_self_type.is_some()) + spec.type_params.len() + 1
}

/// The argument expression of a key argument: a reference to it.
fn reference(arg: &KeyArg, borrowed: bool) -> TokenStream {
    let ident = &arg.ident;
    if borrowed || arg.by_ref {
        quote!(#ident)
    } else {
        quote_spanned!(ident.span()=> &#ident)
    }
}

/// Statements that fill `__cache_args` and `__cache_types`. `borrowed` says
/// every key argument is already a reference (the companion's parameters).
fn key_statements(spec: &Spec, borrowed: bool) -> TokenStream {
    let krate = &spec.krate;
    let mut out = quote! {
        let mut __cache_args = #krate::__private::KeyArgs::new();
    };
    if spec.key_self {
        out.extend(quote_spanned! {spec.receiver_span=> __cache_args.push(self); });
    }
    for param in &spec.const_params {
        out.extend(quote! { __cache_args.push(&#param); });
    }
    for arg in &spec.key_args {
        let reference = reference(arg, borrowed);
        // Spanned at the argument's type: an argument that is not Serialize is
        // reported there.
        out.extend(quote_spanned! {arg.ty.span()=> __cache_args.push(#reference); });
    }
    // The concrete types of this instantiation, which the key records so
    // that instantiations of generic code never share entries: first those
    // counted exactly (`Self`, type parameters, the value; as many as
    // `exact_types` says), then the key arguments' (counted as what they
    // point to).
    let mut types = Vec::new();
    if spec.receiver {
        types.push(quote!(::core::any::type_name::<Self>()));
    } else if let Some(span) = spec.key_self_type {
        // Spanned at the option: outside an `impl`, the error is there.
        types.push(quote_spanned!(span=> ::core::any::type_name::<Self>()));
    }
    for param in &spec.type_params {
        types.push(quote!(::core::any::type_name::<#param>()));
    }
    let value_ty = &spec.value_ty;
    types.push(quote!(::core::any::type_name::<#value_ty>()));
    for arg in &spec.key_args {
        let reference = reference(arg, borrowed);
        types.push(quote!(#krate::__private::type_name_of_val(#reference)));
    }
    let count = types.len();
    out.extend(quote! {
        let __cache_types: [&'static str; #count] = [#(#types),*];
    });
    out
}

fn wrapper(spec: &Spec, item: &ItemFn, names: &Names) -> TokenStream {
    let krate = &spec.krate;
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = item;
    let docs = caching_docs(spec, names);
    let stmts = &block.stmts;
    let (inner, outer): (Vec<&syn::Attribute>, Vec<&syn::Attribute>) = attrs
        .iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Inner(_)));
    let site = call_site(spec, &names.function, false);
    let keys = key_statements(spec, false);
    let value_ty = &spec.value_ty;
    let syn::ReturnType::Type(_, ret_ty) = &sig.output else {
        unreachable!("spec rejects functions without a return type")
    };
    let shape = match spec.shape {
        Shape::Result => quote!(RESULT),
        Shape::Option => quote!(OPTION),
        Shape::Value => quote!(VALUE),
    };
    // With `none_ttl`, the value is an `Option` (checked in `spec`), and a
    // `None` is stored with that TTL.
    let shape = if spec.none_ttl_secs.is_some() {
        quote! {
            #krate::__private::Shape {
                none: ::core::option::Option::Some(::core::option::Option::is_none),
                ..#krate::__private::Shape::#shape
            }
        }
    } else {
        quote!(#krate::__private::Shape::#shape)
    };
    // Spanned at the value type: a value that is not Serialize + Deserialize is
    // reported there.
    let krate_at_value: TokenStream = quote!(#krate)
        .into_iter()
        .map(|mut t| {
            t.set_span(value_ty.span());
            t
        })
        .collect();
    let call = quote_spanned! {value_ty.span()=>
        #krate_at_value::__private::cached::<#value_ty, _, _>(
            &__CACHE_SITE,
            &__cache_types,
            __cache_args,
            __cache_body,
            #shape,
        )
        .await
    };
    quote! {
        #(#outer)*
        #docs
        #vis #sig {
            #(#inner)*
            #site
            #keys
            let __cache_body = async move {
                // Fixes the block's output type before the body is checked, so
                // `?` and `return` in the body infer as they would in the function.
                #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
                if false {
                    let __cache_return: #ret_ty = loop {};
                    return __cache_return;
                }
                #(#stmts)*
            };
            #call
        }
    }
}

fn invalidate_companion(spec: &Spec, item: &ItemFn, names: &Names) -> TokenStream {
    let krate = &spec.krate;
    let vis = &item.vis;
    let generics = &item.sig.generics;
    let where_clause = &generics.where_clause;
    let ident = &names.invalidate;
    let site = call_site(spec, &names.function, true);
    let keys = key_statements(spec, true);
    let receiver = spec.key_self.then(|| quote!(&self,));
    let params = spec
        .key_args
        .iter()
        .map(|arg| by_reference(&arg.ident, &arg.ty));
    let doc = format!(
        "Invalidates the cached result of [`{prefix}{function}`] for these arguments.\n\n\
         Generated by `#[cached]`. When it returns `Ok`, no call returns the \
         invalidated value, in this process or any other sharing the cache. \
         An `Err` means the cache could not be reached.",
        prefix = names.link_prefix,
        function = names.function,
    );
    quote! {
        #[doc = #doc]
        #vis async fn #ident #generics (#receiver #(#params),*) -> ::core::result::Result<(), #krate::Error>
        #where_clause
        {
            #site
            #keys
            #krate::__private::invalidate(&__CACHE_SITE, &__cache_types, __cache_args).await
        }
    }
}

/// A companion parameter: the key argument, by reference.
fn by_reference(ident: &Ident, ty: &syn::Type) -> TokenStream {
    match ty {
        syn::Type::Reference(_) => quote!(#ident: #ty),
        // `&impl A + B` would be ambiguous.
        syn::Type::ImplTrait(_) | syn::Type::TraitObject(_) => quote!(#ident: &(#ty)),
        _ => quote!(#ident: &#ty),
    }
}

/// The companions of a function whose attribute has errors, with the
/// signatures they would have had (as far as the options can be read), so
/// that callers of `<fn>_invalidate` see the attribute's error and not a
/// second, confusing one. They never run: the crate does not compile.
pub(crate) fn placeholder_companions(raw: &RawArgs, item: &ItemFn) -> TokenStream {
    let sig = &item.sig;
    let receiver = sig.receiver().is_some();
    let names = Names::new(&sig.ident, receiver);
    let vis = &item.vis;
    let krate: syn::Path = raw
        .krate
        .as_ref()
        .and_then(|k| k.value.parse().ok())
        .unwrap_or_else(|| syn::parse_quote!(::cache_runtime));
    let skipped: Vec<String> = raw
        .skip
        .as_ref()
        .map(|s| s.value.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let params = sig.inputs.iter().filter_map(|arg| match arg {
        syn::FnArg::Typed(arg) => match &*arg.pat {
            syn::Pat::Ident(p) if !skipped.contains(&p.ident.to_string()) => {
                Some(by_reference(&p.ident, &arg.ty))
            }
            _ => None,
        },
        syn::FnArg::Receiver(_) => None,
    });
    let key_self = receiver && raw.key_self.as_ref().is_some_and(|k| k.value.value);
    let self_param = key_self.then(|| quote!(&self,));
    let generics = &sig.generics;
    let where_clause = &generics.where_clause;
    let invalidate = &names.invalidate;
    let namespace_ident = &names.namespace;
    let namespace = raw
        .namespace
        .as_ref()
        .map_or_else(|| names.function.clone(), |n| n.value.value());
    quote! {
        #[allow(unused_variables, clippy::unused_async)]
        #vis async fn #invalidate #generics (#self_param #(#params),*) -> ::core::result::Result<(), #krate::Error>
        #where_clause
        {
            ::core::unreachable!("#[cached] reported an error")
        }
        #vis const #namespace_ident: &'static str = #namespace;
    }
}

fn namespace_companion(spec: &Spec, item: &ItemFn, names: &Names) -> TokenStream {
    let vis = &item.vis;
    let ident = &names.namespace;
    let namespace = &spec.namespace;
    let doc = format!(
        "The cache namespace of [`{}{}`]: `{namespace}`.\n\n\
         Generated by `#[cached]`; pass it to `invalidate_namespace` to \
         invalidate every cached result of the namespace.",
        names.link_prefix, names.function
    );
    quote! {
        #[doc = #doc]
        #vis const #ident: &'static str = #namespace;
    }
}

fn caching_docs(spec: &Spec, names: &Names) -> TokenStream {
    let mut doc = String::from("\n# Caching\n\nResults are cached by `#[cached]`.\n\n");
    doc.push_str(&format!(
        "- **Namespace:** `{}` ([`{}{}`])\n",
        spec.namespace, names.link_prefix, names.namespace
    ));
    match spec.ttl_secs {
        Some(secs) => doc.push_str(&format!(
            "- **TTL:** {} ({secs} s)\n",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        )),
        None => doc.push_str("- **TTL:** the cache's default\n"),
    }
    if let Some(secs) = spec.none_ttl_secs {
        doc.push_str(&format!(
            "- **TTL of `None`:** {} ({secs} s)\n",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ));
    }
    match spec.jitter {
        Some(0) => doc.push_str("- **TTL jitter:** none\n"),
        Some(percent) => doc.push_str(&format!("- **TTL jitter:** up to {percent}% shorter\n")),
        None => {}
    }
    if let Some(secs) = spec.grace_secs {
        doc.push_str(&format!(
            "- **On `Err`:** the last good value, up to {} ({secs} s) past its TTL\n",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ));
    }
    if !spec.lease {
        doc.push_str("- **Leases:** off: each process runs the body of its own misses\n");
    }
    let key: Vec<String> = spec
        .key_self
        .then(|| "`self`".to_owned())
        .into_iter()
        .chain(spec.key_args.iter().map(|a| format!("`{}`", a.ident)))
        .collect();
    doc.push_str(&format!(
        "- **Key:** {}\n",
        if key.is_empty() {
            "no arguments: one entry".to_owned()
        } else {
            key.join(", ")
        }
    ));
    if !spec.skipped.is_empty() {
        let skipped: Vec<String> = spec.skipped.iter().map(|s| format!("`{s}`")).collect();
        doc.push_str(&format!("- **Not in the key:** {}\n", skipped.join(", ")));
    }
    if spec.version != 0 {
        doc.push_str(&format!("- **Version:** {}\n", spec.version));
    }
    doc.push_str(match (spec.shape, spec.none_ttl_secs.is_some()) {
        (Shape::Result, false) => "- **Cached:** `Ok` values; errors are not cached\n",
        (Shape::Result, true) => {
            "- **Cached:** `Ok` values, `Ok(None)` with its own TTL; errors are not cached\n"
        }
        (Shape::Option, _) => "- **Cached:** `Some` values; `None` is not cached\n",
        (Shape::Value, false) => "- **Cached:** every value\n",
        (Shape::Value, true) => "- **Cached:** every value, `None` with its own TTL\n",
    });
    doc.push_str(&format!(
        "- **Invalidate one entry:** [`{}{}`]\n",
        names.link_prefix, names.invalidate
    ));
    let lines = doc.lines().map(|line| format!(" {line}"));
    quote! { #(#[doc = #lines])* }
}
