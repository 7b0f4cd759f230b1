//! The seam between the core and its feature modules (`modules.rs`):
//! what a module may add to the app that `startup.rs` builds, without
//! the core knowing the module.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use poem::endpoint::BoxEndpoint;
use poem::EndpointExt;

type Layer = Box<dyn FnOnce(BoxEndpoint<'static>) -> BoxEndpoint<'static> + Send>;
type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Collected from every module while the app is built.
#[derive(Default)]
pub struct Extensions {
    layers: Vec<Layer>,
    tasks: Vec<Task>,
    /// What `data` was given, for [`Extensions::shared`].
    values: Vec<Box<dyn Any + Send + Sync>>,
}

/// The values the modules gave [`Extensions::data`], to look up by type
/// outside a request (tests reach a module's state this way).
#[derive(Clone, Default)]
pub struct Shared(Arc<Vec<Box<dyn Any + Send + Sync>>>);

impl Shared {
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.iter().find_map(|value| value.downcast_ref())
    }
}

impl Extensions {
    /// Makes `value` reachable from handlers as `Data<&T>`. Every request
    /// gets a clone of it, so a state with more than handles in it is best
    /// one `Arc` (as `AuthState` is).
    pub fn data<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.push(Box::new(value.clone()));
        self.layer(move |endpoint| endpoint.data(value).boxed());
    }

    /// Everything given to [`Extensions::data`] so far.
    pub(crate) fn shared(&mut self) -> Shared {
        Shared(Arc::new(std::mem::take(&mut self.values)))
    }

    /// Wraps the routes, inside the error rendering: an error the layer
    /// returns still becomes a problem document.
    pub fn layer(
        &mut self,
        layer: impl FnOnce(BoxEndpoint<'static>) -> BoxEndpoint<'static> + Send + 'static,
    ) {
        self.layers.push(Box::new(layer));
    }

    /// Runs `task` while the app serves; it is stopped with the app.
    pub fn task(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    /// Applies every layer, in the order they were added (the first
    /// innermost).
    pub(crate) fn wrap(&mut self, endpoint: BoxEndpoint<'static>) -> BoxEndpoint<'static> {
        self.layers
            .drain(..)
            .fold(endpoint, |endpoint, layer| layer(endpoint))
    }

    pub(crate) fn take_tasks(&mut self) -> Vec<Task> {
        std::mem::take(&mut self.tasks)
    }
}
