//! The `#[cached]` attribute. Use it through `cache-runtime`, which re-exports
//! it and documents it in full.
//!
//! The expansion runs in three steps, each with its own types: `attr` parses the
//! options as written, `spec` checks them against each other and the function,
//! `expand` generates code from the checked spec.

#![deny(missing_docs)]

use proc_macro::TokenStream;

mod attr;
mod errors;
mod expand;
mod spec;

/// Caches the results of an async function. See `cache_runtime::cached` for
/// the full documentation.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_impl(args.into(), item.into()).into()
}

fn cached_impl(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut errors = errors::Errors::default();
    let raw = attr::RawArgs::parse(args, &mut errors);
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[cached] goes on an `async fn` (a free function or a method in an `impl` block)",
            );
            let error = error.to_compile_error();
            return quote::quote! { #item #error };
        }
    };
    match spec::Spec::new(raw, &function, &mut errors) {
        Some(spec) => expand::expand(&spec, &function),
        // Emit the function unchanged next to the errors, so that the rest of
        // the crate (and the IDE) still sees it.
        None => {
            let errors = errors.to_compile_errors();
            quote::quote! { #function #errors }
        }
    }
}
